"""Slow down bad keys without locking out good ones.

Failures are counted in Redis (INCR + EXPIRE, a fixed window shared by every api
worker) per (address, presented key id), and per address over every key id. Every
local client is 127.0.0.1, so an address alone cannot tell clients apart: counting by
key id keeps one integration with a revoked key from throttling the others, and the
address-wide count (`ADDRESS_FACTOR` times the limit) still stops a client that sprays
made-up key ids.

Only failures are throttled: a request is checked against its key first, and a valid
key always passes, whatever others did from the same address. A refused key over
either limit answers 429 (Retry-After: until its window ends) instead of 401.
Secrets are 32 random bytes, so letting a key be checked while its bucket is full does
not help a guesser; the 429 tells a misconfigured client to back off.
"""

from __future__ import annotations

import re
from typing import Final

import redis.asyncio as aioredis

from appliance import redis_keys
from appliance.errors import RateLimited

# The address-wide limit is this many times the per-key limit.
ADDRESS_FACTOR: Final = 10
# What a presented key id may look like in a Redis key: anything else counts as "-".
_KEY_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def key_id_of(presented: str | None) -> str:
    """The id part of `wapp_<id>_<secret>` for counting; "-" for none or a malformed one."""
    if not presented or not presented.startswith("wapp_"):
        return "-"
    key_id, sep, _ = presented[len("wapp_") :].partition("_")
    return key_id if sep and _KEY_ID.match(key_id) else "-"


def _keys(address: str, key_id: str) -> tuple[str, str]:
    return (
        redis_keys.auth_failures_key(address, key_id),
        redis_keys.address_auth_failures_key(address),
    )


async def record_failure(
    redis: aioredis.Redis, address: str, presented: str | None, *, limit: int, window_s: int
) -> None:
    """Count a refused key; raise RateLimited when this key id or this address is over."""
    per_key, per_address = _keys(address, key_id_of(presented))
    pipe = redis.pipeline(transaction=False)
    pipe.incr(per_key)
    pipe.expire(per_key, window_s, nx=True)
    pipe.incr(per_address)
    pipe.expire(per_address, window_s, nx=True)
    pipe.ttl(per_key)
    pipe.ttl(per_address)
    key_count, _, address_count, _, key_ttl, address_ttl = await pipe.execute()
    over = []
    if int(key_count) > limit:
        over.append(int(key_ttl))
    if int(address_count) > limit * ADDRESS_FACTOR:
        over.append(int(address_ttl))
    if over:
        raise RateLimited(
            "too many requests with a bad API key from this address", retry_after_s=max(*over, 1)
        )
