"""What a key used of its quotas: sessions it owns, and messages counted today (the
Redis counter the send path takes from, services/messages.take_quota)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance import redis_keys
from appliance.db.models import ApiKey, Session
from appliance.redis_client import create_redis
from appliance.settings import Settings


@dataclass(frozen=True)
class Usage:
    sessions: int
    # None: Redis did not answer (the stack is down); the count lives only there.
    messages_today: int | None


async def usage(db: async_sessionmaker[AsyncSession], settings: Settings, key: ApiKey) -> Usage:
    async with db() as s:
        owned = await s.scalar(
            sa.select(sa.func.count())
            .select_from(Session)
            .where(col(Session.owner_key_id) == key.id)
        )
    redis = create_redis(settings)
    try:
        raw = await redis.get(redis_keys.quota_key(key.id, datetime.now(UTC)))
        today: int | None = int(raw) if raw else 0
    except (RedisError, OSError):
        today = None
    finally:
        await redis.aclose()
    return Usage(sessions=int(owned or 0), messages_today=today)
