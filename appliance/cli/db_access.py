"""A database for the length of one CLI command: engine built, used, disposed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.db.engine import create_db_engine, create_sessionmaker
from appliance.settings import Settings


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_db_engine(settings)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()
