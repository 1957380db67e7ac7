"""What a CLI command that works on sessions and messages needs: the database (writer and
reader, as the api builds them), Redis, and the caller the services expect.

The CLI acts as admin: as the oldest active admin API key (the one `wapp keys
bootstrap-admin` or ./install.sh made), so a session it creates is owned, and a message
it sends is counted, exactly as if that key had called the API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.auth import api_keys
from appliance.auth.principal import Principal
from appliance.db.engine import create_db_engine, create_sessionmaker, create_writer_engine
from appliance.errors import CommandFailed
from appliance.redis_client import create_redis
from appliance.settings import Settings


class NoAdminKey(CommandFailed):
    code = "NO_ADMIN_KEY"


@dataclass(frozen=True)
class Admin:
    settings: Settings
    writer: async_sessionmaker[AsyncSession]
    reader: async_sessionmaker[AsyncSession]
    redis: aioredis.Redis
    principal: Principal


async def admin_principal(reader: async_sessionmaker[AsyncSession]) -> Principal:
    admins = [k for k in await api_keys.list_api_keys(reader) if k.role == "admin"]
    if not admins:
        raise NoAdminKey(
            "no admin API key exists yet, and the CLI acts as one: "
            "`wapp keys bootstrap-admin` creates the first"
        )
    return Principal(key=admins[0])


@asynccontextmanager
async def admin_access(settings: Settings) -> AsyncIterator[Admin]:
    db = create_db_engine(settings)
    writer_db = create_writer_engine(settings, db)
    redis = create_redis(settings)
    try:
        reader = create_sessionmaker(db, read_only=True)
        yield Admin(
            settings=settings,
            writer=create_sessionmaker(writer_db),
            reader=reader,
            redis=redis,
            principal=await admin_principal(reader),
        )
    finally:
        await redis.aclose()
        if writer_db is not db:
            await writer_db.dispose()
        await db.dispose()
