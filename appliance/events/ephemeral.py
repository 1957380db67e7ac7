"""Short-lived session facts kept in Redis, not SQL: the current QR and pairing code.

They expire with the code itself, so a stale QR can never be served.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import redis.asyncio as aioredis

from appliance.redis_keys import pairing_code_key, qr_key

# A QR without an expiry still must not live forever: WhatsApp rotates them in 20-60 s.
DEFAULT_TTL_S = 60


def _ttl_ms(expires_at: datetime | None, now: datetime) -> int:
    if expires_at is None:
        return DEFAULT_TTL_S * 1000
    return int((expires_at - now).total_seconds() * 1000)


async def store_qr(
    redis: aioredis.Redis, session: str, qr: str, expires_at: datetime | None
) -> None:
    ttl = _ttl_ms(expires_at, datetime.now(UTC))
    if ttl <= 0:
        return
    value = {"qr": qr, "expires_at": expires_at.isoformat() if expires_at else None}
    await redis.set(qr_key(session), orjson.dumps(value), px=ttl)


async def store_pairing_code(
    redis: aioredis.Redis, session: str, code: str, expires_at: datetime | None
) -> None:
    ttl = _ttl_ms(expires_at, datetime.now(UTC))
    if ttl <= 0:
        return
    value = {"code": code, "expires_at": expires_at.isoformat() if expires_at else None}
    await redis.set(pairing_code_key(session), orjson.dumps(value), px=ttl)


async def clear_pairing(redis: aioredis.Redis, session: str) -> None:
    await redis.delete(qr_key(session), pairing_code_key(session))
