"""`wapp keys rotate-master`: a new master key re-wraps every session's data key and every
webhook secret, online, and a crash at any point loses nothing.

The files tell where a run stopped, so running again finishes it (keyring.py names them):

1. no `.next`, no `.old`: start; write `master.key.next` (a new random key).
2. `.next`: pass 1 re-wraps every item under the next key. Readers (api, engine) try
   every key present, writers already wrap with `.next`, so nothing goes unreadable.
3. swap: `master.key.old` = the current key (atomic write), then `master.key.next`
   renamed over `master.key` (atomic). A crash between the two leaves both files: the
   rename is done on the next run.
4. `.old` only: pass 2 re-wraps what a writer wrapped under the old key while pass 1 ran
   (a session opened in that instant), then `.old` is deleted: the old key is gone.

Each item is replaced by compare-and-set (a Lua script in Redis, `WHERE old value` in SQL),
so a concurrent change (a logout, a webhook secret rotation) is never overwritten.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.asyncio import Redis

from appliance import redis_keys
from appliance.db.engine import create_db_engine, create_sessionmaker
from appliance.db.models import Webhook
from appliance.errors import CommandFailed
from appliance.redis_client import create_redis
from appliance.security.keyring import next_path, old_path, sync_dir, write_key_file
from appliance.security.master_key import KEY_BYTES, load_master_key
from appliance.settings import Settings
from appliance.webhooks.crypto import open_sealed, seal

IV_BYTES = 12
TAG_BYTES = 16
AUTH_PATTERN = redis_keys.pattern("auth_key")
DEK_FIELD = "dek"

# Replace the wrapped data key only if it is still the one we read.
_CAS_DEK = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""

# Called as (phase, items done): "next", "sessions", "webhooks", "swap", "final".
Progress = Callable[[str, int], None]


@dataclass
class RotationReport:
    resumed: bool = False
    sessions_rewrapped: int = 0
    secrets_rewrapped: int = 0


# Sealed values as the engine writes them (engine/src/auth/crypto.ts): IV || tag || data.
def _open_dek(master: bytes, wrapped: bytes, aad: bytes) -> bytes:
    iv, tag, body = wrapped[:IV_BYTES], wrapped[IV_BYTES : IV_BYTES + TAG_BYTES], wrapped[28:]
    return AESGCM(master).decrypt(iv, body + tag, aad)


def _seal_dek(master: bytes, plain: bytes, aad: bytes) -> bytes:
    iv = secrets.token_bytes(IV_BYTES)
    out = AESGCM(master).encrypt(iv, plain, aad)
    return iv + out[-TAG_BYTES:] + out[:-TAG_BYTES]


def _unwrap(keys: list[bytes], wrapped: bytes, aad: bytes) -> bytes | None:
    for key in keys:
        try:
            return _open_dek(key, wrapped, aad)
        except InvalidTag:
            continue
    return None


async def _rewrap_sessions(
    redis: Redis, old: list[bytes], new: bytes, progress: Progress
) -> tuple[int, list[str]]:
    cas = redis.register_script(_CAS_DEK)
    done = 0
    unreadable: list[str] = []
    async for raw_key in redis.scan_iter(match=AUTH_PATTERN, count=200):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        aad = f"{key}:dek".encode()
        while True:
            wrapped: bytes | None = await redis.hget(key, DEK_FIELD)  # type: ignore[misc]
            if wrapped is None:
                break  # logged out meanwhile, or no data key yet
            if _unwrap([new], wrapped, aad) is not None:
                break  # already under the new key (a resumed run, or a new session)
            plain = _unwrap(old, wrapped, aad)
            if plain is None:
                unreadable.append(key)
                break
            if await cas(keys=[key], args=[DEK_FIELD, wrapped, _seal_dek(new, plain, aad)]):
                done += 1
                progress("sessions", done)
                break
    return done, unreadable


def _open_secret(keys: list[bytes], stored: str) -> str | None:
    for key in keys:
        try:
            return open_sealed(key, stored)
        except InvalidTag:
            continue
    return None


async def _rewrap_secrets(
    settings: Settings, old: list[bytes], new: bytes, progress: Progress
) -> tuple[int, list[str]]:
    done = 0
    unreadable: list[str] = []
    table: sa.Table = Webhook.__table__  # type: ignore[attr-defined]
    columns = ("secret_encrypted", "previous_secret_encrypted")
    engine = create_db_engine(settings)
    try:
        async with create_sessionmaker(engine)() as db:
            query = sa.select(table.c.id, *(table.c[c] for c in columns))
            for row in (await db.execute(query)).all():
                for column in columns:
                    stored = getattr(row, column)
                    if stored is None or _open_secret([new], stored) is not None:
                        continue
                    plain = _open_secret(old, stored)
                    if plain is None:
                        unreadable.append(f"webhook {row.id} {column}")
                        continue
                    # Compare-and-set: an API-side secret rotation in between wins.
                    await db.execute(
                        sa.update(table)
                        .where(table.c.id == row.id, table.c[column] == stored)
                        .values({column: seal(new, plain)})
                    )
                    await db.commit()
                    done += 1
                    progress("webhooks", done)
    finally:
        await engine.dispose()
    return done, unreadable


async def _pass(
    settings: Settings, old: list[bytes], new: bytes, progress: Progress, report: RotationReport
) -> None:
    redis = create_redis(settings)
    try:
        sessions, bad_sessions = await _rewrap_sessions(redis, old, new, progress)
    finally:
        await redis.aclose()
    hooks, bad_hooks = await _rewrap_secrets(settings, old, new, progress)
    report.sessions_rewrapped += sessions
    report.secrets_rewrapped += hooks
    bad = bad_sessions + bad_hooks
    if bad:
        # Stop before the old key is deleted: these may still be readable with it.
        raise CommandFailed(
            f"{len(bad)} item(s) are under none of the rotation's keys, the old key is kept: "
            + ", ".join(bad[:5]),
            details={"unreadable": bad},
        )


async def rotate_master(settings: Settings, progress: Progress | None = None) -> RotationReport:
    """Rotate (or finish an interrupted rotation of) the master key."""
    tell: Progress = progress or (lambda _phase, _n: None)
    path = settings.master_key_path
    upcoming, previous = next_path(path), old_path(path)
    report = RotationReport(resumed=upcoming.exists() or previous.exists())
    if not previous.exists():
        if not upcoming.exists():
            write_key_file(upcoming, secrets.token_bytes(KEY_BYTES))
            tell("next", 0)
        current, new = load_master_key(path), load_master_key(upcoming)
        await _pass(settings, [current], new, tell, report)
        write_key_file(previous, current)
        tell("swap", 0)
    if upcoming.exists():
        # The swap was interrupted after `.old` was written: finish it.
        os.replace(upcoming, path)
        sync_dir(path.parent)
    tell("final", 0)
    await _pass(settings, [load_master_key(previous)], load_master_key(path), tell, report)
    previous.unlink()
    sync_dir(path.parent)
    return report
