"""Slow down guessing: repeated bad API keys from one address answer 429 for a while.

A fixed window per address in Redis (INCR + EXPIRE), shared by every api worker.
Concurrent checks of one address share one GET (`SingleFlight`), and an address found
below the limit is not read again for `CLEAR_TTL_S`: a failure recorded in this process
takes effect at once (it forgets the address), one recorded by another worker within
that time.
"""

from __future__ import annotations

import time
import weakref

import redis.asyncio as aioredis

from appliance.auth.single_flight import SingleFlight
from appliance.errors import RateLimited


def _key(address: str) -> str:
    return f"wapp:authfail:{address}"


# Requests from one address check it together: one GET answers all that arrive meanwhile.
_reads: SingleFlight[bytes | str | None] = SingleFlight()


CLEAR_TTL_S = 1.0
_MAX_REMEMBERED = 10_000
# Per Redis client (by id, dropped with the client): address -> until when (monotonic)
# it is known to be below the limit.
_clear: dict[int, dict[str, float]] = {}


def _clear_for(redis: aioredis.Redis) -> dict[str, float]:
    found = _clear.get(id(redis))
    if found is None:
        found = _clear[id(redis)] = {}
        weakref.finalize(redis, _clear.pop, id(redis), None)
    return found


async def ensure_not_blocked(redis: aioredis.Redis, address: str, *, limit: int) -> None:
    clear = _clear_for(redis)
    now = time.monotonic()
    if clear.get(address, 0.0) > now:
        return
    key = _key(address)
    failures = await _reads.run((id(redis), key), lambda: redis.get(key))
    if failures is None or int(failures) < limit:
        if len(clear) >= _MAX_REMEMBERED:
            clear.clear()
        clear[address] = now + CLEAR_TTL_S
        return
    ttl = await redis.ttl(key)
    raise RateLimited(
        "too many requests with a bad API key from this address", retry_after_s=max(ttl, 1)
    )


async def record_failure(redis: aioredis.Redis, address: str, *, window_s: int) -> None:
    _clear_for(redis).pop(address, None)
    pipe = redis.pipeline()
    pipe.incr(_key(address))
    pipe.expire(_key(address), window_s, nx=True)
    await pipe.execute()
