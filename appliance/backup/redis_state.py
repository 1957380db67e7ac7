"""Redis in a backup: every `wapp:*` key as DUMP/RESTORE payloads with its TTL.

Why DUMP/RESTORE rather than a copy of the AOF: it works on a live Redis (managed or
external), keeps streams whole (entries, consumer groups, pending entries: the RDB format
DUMP uses carries them all) and restores into any Redis of the same or a newer major
version. All DUMPs run in one MULTI, so the copy is one point in time; the keys are found
by SCAN first, and a key gone by the MULTI is simply not copied.

Left out: engine heartbeats and request replies, which belong to the processes of the box
the backup was taken on (a restored heartbeat would claim a live engine that is not).

Record format: key length (u32), key, PTTL in ms (i64, -1: none), payload length (u32),
payload.
"""

from __future__ import annotations

import fnmatch
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from redis.asyncio import Redis

from appliance import redis_keys
from appliance.backup.errors import BackupCorrupt
from appliance.redis_keys import PREFIX

VOLATILE = (redis_keys.pattern("engine_heartbeat_key"), redis_keys.pattern("reply_key"))
_HEAD = struct.Struct(">I")
_TTL = struct.Struct(">q")


@dataclass(frozen=True)
class Record:
    key: bytes
    pttl_ms: int
    payload: bytes


def _volatile(key: bytes) -> bool:
    text = key.decode("utf-8", "replace")
    return any(fnmatch.fnmatchcase(text, pattern) for pattern in VOLATILE)


async def snapshot(redis: Redis) -> list[Record]:
    keys = [k async for k in redis.scan_iter(match=f"{PREFIX}*", count=1000)]
    keys = sorted(k for k in keys if not _volatile(k))
    async with redis.pipeline(transaction=True) as pipe:
        for key in keys:
            pipe.dump(key)
            pipe.pttl(key)
        answers = await pipe.execute()
    out = []
    for i, key in enumerate(keys):
        payload, pttl = answers[2 * i], answers[2 * i + 1]
        if payload is not None:
            out.append(Record(key, int(pttl) if int(pttl) > 0 else -1, payload))
    return out


def encode(records: list[Record]) -> bytes:
    parts = []
    for r in records:
        parts += [_HEAD.pack(len(r.key)), r.key, _TTL.pack(r.pttl_ms)]
        parts += [_HEAD.pack(len(r.payload)), r.payload]
    return b"".join(parts)


def decode(data: bytes) -> list[Record]:
    return list(_iter(data))


def _iter(data: bytes) -> Iterator[Record]:
    at = 0
    try:
        while at < len(data):
            (klen,) = _HEAD.unpack_from(data, at)
            key = data[at + 4 : at + 4 + klen]
            at += 4 + klen
            (pttl,) = _TTL.unpack_from(data, at)
            (plen,) = _HEAD.unpack_from(data, at + 8)
            payload = data[at + 12 : at + 12 + plen]
            at += 12 + plen
            if len(key) != klen or len(payload) != plen:
                raise struct.error("short record")
            yield Record(key, pttl, payload)
    except struct.error as exc:
        raise BackupCorrupt(f"the backup's Redis part is malformed: {exc}") from exc


async def auth_keys_present(redis: Redis) -> bool:
    async for _ in redis.scan_iter(match=redis_keys.pattern("auth_key"), count=1000):
        return True
    return False


async def replace_all(redis: Redis, records: list[Record]) -> None:
    """Every `wapp:*` key replaced by the backup's, in one MULTI: all or nothing."""
    existing = [k async for k in redis.scan_iter(match=f"{PREFIX}*", count=1000)]
    async with redis.pipeline(transaction=True) as pipe:
        if existing:
            pipe.delete(*existing)
        for r in records:
            pipe.restore(r.key, max(r.pttl_ms, 0), r.payload, replace=True)
        await pipe.execute()
