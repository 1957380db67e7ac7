"""The api side's Redis client, built from Settings (managed unix socket or external url)."""

from __future__ import annotations

import redis.asyncio as aioredis

from appliance.settings import Settings


def create_redis(settings: Settings) -> aioredis.Redis:
    client: aioredis.Redis = aioredis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=5,
        # No read timeout: XREAD/XREADGROUP/BLPOP block longer than any sane timeout;
        # callers that must not wait bound themselves (readiness uses wait_for).
        socket_timeout=None,
        health_check_interval=30,
    )
    return client
