"""Ids: UUID7 for rows, UUID4 for the rest, drawn from a pooled read of the OS's randomness.

Row ids are UUID7 (RFC 9562: a millisecond timestamp, then 74 random bits): new rows
land at the right edge of every index on the id instead of at a random page, which on a
table of some 10^5 messages made inserts about a third cheaper (SQLite and Postgres
alike). They say when a row was made, which the row says anyway.

Every accepted message takes three random ids (its own, its timeline row's, its trace
id). `uuid.uuid4()` makes one getrandom(2) call each, which under load cost a visible
share of the api's hot path; here one call fills a pool that serves 256 ids. The bytes
are the same quality (`os.urandom`), the pool is per process (refilled empty after a
fork, so a forked worker never repeats its parent's ids) and guarded by a lock (the
SQL driver's threads may take ids too).
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_POOL_BYTES = 4096


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = b""
        self._pos = 0

    def reset(self) -> None:
        self._lock = threading.Lock()
        self._buf = b""
        self._pos = 0

    def take(self) -> int:
        with self._lock:
            if self._pos + 16 > len(self._buf):
                self._buf = os.urandom(_POOL_BYTES)
                self._pos = 0
            start = self._pos
            self._pos = start + 16
            return int.from_bytes(self._buf[start : start + 16], "big")


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.reset)

# The version (4) and variant (RFC 4122) bits, as uuid.UUID(version=4) sets them.
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_SET = (4 << 76) | (0x8000 << 48)


def _v4_int() -> int:
    return (_pool.take() & _CLEAR) | _SET


def uuid4() -> uuid.UUID:
    return uuid.UUID(int=_v4_int())


def hex_id() -> str:
    """32 lowercase hex digits: a trace id."""
    return f"{_v4_int():032x}"


def uuid7() -> uuid.UUID:
    """RFC 9562 version 7: 48 bits of Unix milliseconds, version, 12 + 62 random bits."""
    rand = _pool.take()
    millis = time.time_ns() // 1_000_000
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | ((rand >> 64) & 0xFFF) << 64
        | 0b10 << 62
        | rand & 0x3FFF_FFFF_FFFF_FFFF
    )
    return uuid.UUID(int=value)


def uuid7_time_prefix() -> str:
    """The first 14 characters of a UUID7 made now ("tttttttt-tttt-"), for ids that the
    database completes with its own random digits (the webhook outbox's INSERT ... SELECT)."""
    return str(uuid7())[:14]
