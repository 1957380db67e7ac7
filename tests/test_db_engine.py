from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance.db.engine import create_db_engine, create_sessionmaker, is_sqlite, ping, reader
from appliance.db.models import ApiKey, Session
from appliance.errors import ConfigError
from tests.fixtures.settings import MakeSettings, database_url_under_test

sqlite_only = pytest.mark.skipif(
    database_url_under_test() is not None, reason="SQLite behaviour; this run is on Postgres"
)


async def test_ping_answers_on_a_reachable_database(db_engine: AsyncEngine) -> None:
    await ping(db_engine)


async def test_ping_raises_when_the_database_cannot_be_reached(
    make_settings: MakeSettings,
) -> None:
    url = (
        "sqlite+aiosqlite:////nonexistent-wapp-dir/wapp.db"
        if database_url_under_test() is None
        else "postgresql+asyncpg://postgres@127.0.0.1:1/test"
    )
    engine = create_db_engine(make_settings(database={"url": url}))
    threads_before = set(threading.enumerate())
    try:
        with pytest.raises((OperationalError, OSError)):
            await ping(engine)
    finally:
        await engine.dispose()
        await _aiosqlite_threads_ended(threads_before)


async def _aiosqlite_threads_ended(threads_before: set[threading.Thread]) -> None:
    # aiosqlite (0.22) stops the thread of a connection that failed to open with a
    # future nobody awaits; the thread later resolves it on this test's loop, which
    # must still be running then, or the thread dies on "Event loop is closed".
    for thread in set(threading.enumerate()) - threads_before:
        if "_connection_worker_thread" in thread.name:
            await asyncio.to_thread(thread.join, 5)


def test_a_malformed_url_is_a_configuration_error(make_settings: MakeSettings) -> None:
    settings = make_settings(database={"url": "postgresql+asyncpg://u@host:notaport/db"})
    with pytest.raises(ConfigError, match=r"database\.url"):
        create_db_engine(settings)


@sqlite_only
async def test_sqlite_connections_use_wal_foreign_keys_and_the_configured_busy_timeout(
    make_settings: MakeSettings, database_url: str
) -> None:
    settings = make_settings(database={"url": database_url, "sqlite_busy_timeout_ms": 4321})
    engine = create_db_engine(settings)
    try:
        # Several pooled connections: each one must have been set up, not only the first.
        async with reader(engine).connect() as a, reader(engine).connect() as b:
            for conn in (a, b):
                pragmas = {
                    name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                    for name in ("journal_mode", "foreign_keys", "busy_timeout")
                }
                assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 4321}
    finally:
        await engine.dispose()


async def _add_key(maker: async_sessionmaker[AsyncSession], name: str) -> None:
    # Read then write in one transaction: the shape that deadlocks deferred SQLite
    # transactions (both hold a read lock and both want to upgrade it).
    async with maker() as session, session.begin():
        count = (await session.execute(sa.select(sa.func.count()).select_from(ApiKey))).scalar_one()
        session.add(ApiKey(name=f"{name}-{count}", secret_hash="h", role="tenant"))


async def test_concurrent_read_then_write_transactions_all_commit(
    db_engine: AsyncEngine, db_sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    writers, rounds = 20, 10

    async def writer(i: int) -> None:
        for r in range(rounds):
            await _add_key(db_sessionmaker, f"w{i}.{r}")

    await asyncio.gather(*(writer(i) for i in range(writers)))
    async with db_engine.connect() as conn:
        total = (await conn.execute(sa.select(sa.func.count()).select_from(ApiKey))).scalar_one()
    assert total == writers * rounds


@sqlite_only
async def test_a_deferred_sqlite_transaction_that_reads_then_writes_is_refused_after_a_commit(
    db_engine: AsyncEngine,
) -> None:
    # Why writes BEGIN IMMEDIATE: this is the "database is locked" that busy_timeout
    # cannot cure, and the default session maker must never produce it.
    assert is_sqlite(db_engine)
    deferred = create_sessionmaker(db_engine, read_only=True)
    immediate = create_sessionmaker(db_engine)
    async with deferred() as reader:
        await reader.begin()
        await reader.execute(sa.select(sa.func.count()).select_from(ApiKey))
        await _add_key(immediate, "other")
        reader.add(ApiKey(name="late", secret_hash="h", role="tenant"))
        with pytest.raises(OperationalError, match="locked"):
            await reader.flush()
        await reader.rollback()


@sqlite_only
async def test_an_immediate_sqlite_writer_waits_for_the_other_instead_of_failing(
    db_engine: AsyncEngine, db_sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with db_sessionmaker() as first:
        await first.begin()
        await first.execute(sa.select(sa.func.count()).select_from(ApiKey))
        second = asyncio.create_task(_add_key(db_sessionmaker, "second"))
        await asyncio.sleep(0.2)
        assert not second.done()  # it waits on busy_timeout for our write lock
        first.add(ApiKey(name="first", secret_hash="h", role="tenant"))
        await first.commit()
    await asyncio.wait_for(second, timeout=5)
    async with db_engine.connect() as conn:
        names = set((await conn.execute(sa.select(col(ApiKey.name)))).scalars())
    assert names == {"first", "second-1"}


async def test_datetimes_come_back_aware_in_utc_and_equal_to_what_was_stored(
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    kolkata = timezone(timedelta(hours=5, minutes=30))
    stored = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=kolkata)
    async with db_sessionmaker() as session, session.begin():
        key = ApiKey(name="k", secret_hash="h", role="admin", created_at=stored)
        session.add(key)
    async with db_sessionmaker() as session:
        loaded = await session.get(ApiKey, key.id)
        assert loaded is not None
        assert loaded.created_at == stored
        assert loaded.created_at.tzinfo is UTC
        assert loaded.created_at == datetime(2026, 3, 28, 20, 0, 15, 123456, tzinfo=UTC)
        # SQL compares instants: a parameter in another zone still matches (on SQLite
        # this only holds because values are normalised to UTC text).
        query = sa.select(col(ApiKey.id)).where(col(ApiKey.created_at) == stored)
        found = (await session.execute(query)).scalars().all()
        assert found == [key.id]


async def test_a_naive_datetime_is_refused(
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with db_sessionmaker() as session:
        session.add(
            ApiKey(name="k", secret_hash="h", role="admin", created_at=datetime(2026, 1, 1))
        )
        with pytest.raises(StatementError, match="naive datetime"):
            await session.flush()


async def test_json_round_trips_and_none_is_sql_null(
    db_sessionmaker: async_sessionmaker[AsyncSession], db_engine: AsyncEngine
) -> None:
    pacing = {"enabled": False, "min_interval_s": 2.5, "note": "héllo ✓", "caps": [1, 2]}
    async with db_sessionmaker() as session, session.begin():
        with_pacing = Session(name="a", upstream="sandbox", pacing=pacing)
        without = Session(name="b", upstream="sandbox")
        session.add_all([with_pacing, without])
    async with db_sessionmaker() as session:
        loaded = await session.get(Session, with_pacing.id)
        assert loaded is not None
        assert loaded.pacing == pacing
    async with db_engine.connect() as conn:
        nulls = (
            (await conn.execute(sa.text("SELECT name FROM sessions WHERE pacing IS NULL")))
            .scalars()
            .all()
        )
    assert nulls == ["b"]
