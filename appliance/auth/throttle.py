"""Slow down guessing: repeated bad API keys from one address answer 429 for a while.

A fixed window per address in Redis (INCR + EXPIRE), shared by every api worker.
Concurrent checks of one address share one GET (`SingleFlight`).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from appliance.auth.single_flight import SingleFlight
from appliance.errors import RateLimited


def _key(address: str) -> str:
    return f"wapp:authfail:{address}"


# Requests from one address check it together: one GET answers all that arrive meanwhile.
_reads: SingleFlight[bytes | str | None] = SingleFlight()


async def ensure_not_blocked(redis: aioredis.Redis, address: str, *, limit: int) -> None:
    key = _key(address)
    failures = await _reads.run((id(redis), key), lambda: redis.get(key))
    if failures is not None and int(failures) >= limit:
        ttl = await redis.ttl(_key(address))
        raise RateLimited(
            "too many requests with a bad API key from this address", retry_after_s=max(ttl, 1)
        )


async def record_failure(redis: aioredis.Redis, address: str, *, window_s: int) -> None:
    pipe = redis.pipeline()
    pipe.incr(_key(address))
    pipe.expire(_key(address), window_s, nx=True)
    await pipe.execute()
