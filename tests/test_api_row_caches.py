"""Short-lived row caches on the send path: bounded staleness, immediate local invalidation."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from appliance.auth import api_keys, key_cache
from appliance.auth.principal import Principal
from appliance.auth.single_flight import SingleFlight
from appliance.db.models import ApiKey, Session
from appliance.db.types import utcnow
from appliance.errors import Unauthorized
from appliance.services import session_cache, sessions

Db = async_sessionmaker[AsyncSession]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(key_cache.time, "monotonic", fake)
    return fake


def _count_selects(engine: AsyncEngine) -> list[str]:
    seen: list[str] = []

    @sa.event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _record(*args: object) -> None:
        statement = str(args[2])
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    return seen


async def test_a_key_is_read_once_within_the_ttl(
    db_sessionmaker: Db, db_engine: AsyncEngine, clock: Clock
) -> None:
    created = await api_keys.create_api_key(db_sessionmaker, name="k", role="tenant")
    selects = _count_selects(db_engine)
    for _ in range(5):
        assert (
            await api_keys.authenticate(db_sessionmaker, created.plaintext)
        ).id == created.key.id
    assert len(selects) == 1
    clock.now += key_cache.TTL_S
    await api_keys.authenticate(db_sessionmaker, created.plaintext)
    assert len(selects) == 2


async def test_a_cached_key_still_needs_its_secret(db_sessionmaker: Db, clock: Clock) -> None:
    created = await api_keys.create_api_key(db_sessionmaker, name="k", role="tenant")
    await api_keys.authenticate(db_sessionmaker, created.plaintext)
    with pytest.raises(Unauthorized):
        await api_keys.authenticate(db_sessionmaker, created.plaintext[:-2] + "xx")


async def test_a_key_revoked_here_is_refused_at_once(db_sessionmaker: Db, clock: Clock) -> None:
    created = await api_keys.create_api_key(db_sessionmaker, name="k", role="tenant")
    await api_keys.authenticate(db_sessionmaker, created.plaintext)
    await api_keys.revoke_api_key(db_sessionmaker, created.key.id)
    with pytest.raises(Unauthorized):
        await api_keys.authenticate(db_sessionmaker, created.plaintext)


async def test_a_key_revoked_by_another_process_is_refused_within_the_ttl(
    db_sessionmaker: Db, clock: Clock
) -> None:
    created = await api_keys.create_api_key(db_sessionmaker, name="k", role="tenant")
    await api_keys.authenticate(db_sessionmaker, created.plaintext)
    async with db_sessionmaker() as db, db.begin():  # another worker's revoke: no local hook
        await db.execute(
            sa.update(ApiKey).where(ApiKey.id == created.key.id).values(revoked_at=utcnow())  # type: ignore[arg-type]
        )
    await api_keys.authenticate(db_sessionmaker, created.plaintext)  # the window
    clock.now += key_cache.TTL_S
    with pytest.raises(Unauthorized):
        await api_keys.authenticate(db_sessionmaker, created.plaintext)


async def _session(db: Db, key_id: str) -> Session:
    row = Session(name="cached-1", upstream="whatsapp", state="connected", owner_key_id=key_id)
    async with db() as s, s.begin():
        s.add(row)
    return row


async def test_a_session_change_in_this_process_empties_the_cache_and_others_wait_the_ttl(
    db_sessionmaker: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Clock()
    monkeypatch.setattr(session_cache.time, "monotonic", fake)
    session_cache.watch_changes()  # as the api does at start
    session_cache.watch_changes()  # idempotent: one listener, not two
    created = await api_keys.create_api_key(db_sessionmaker, name="k", role="tenant")
    principal = Principal(key=created.key)
    row = await _session(db_sessionmaker, created.key.id)
    assert (await sessions.get_cached(db_sessionmaker, principal, "cached-1")).state == "connected"
    async with db_sessionmaker() as db, db.begin():  # an ORM statement, as the consumer's
        await db.execute(
            sa.update(Session).where(Session.id == row.id).values(state="reconnecting")  # type: ignore[arg-type]
        )
    assert (await sessions.get_cached(db_sessionmaker, principal, "cached-1")).state == (
        "reconnecting"
    )
    # A change this process cannot see (a plain connection, like another process).
    async with db_sessionmaker.kw["bind"].begin() as conn:
        await conn.execute(
            sa.text("UPDATE sessions SET state = 'connected' WHERE id = :id"), {"id": row.id}
        )
    assert (await sessions.get_cached(db_sessionmaker, principal, "cached-1")).state == (
        "reconnecting"
    )
    fake.now += session_cache.TTL_S
    assert (await sessions.get_cached(db_sessionmaker, principal, "cached-1")).state == "connected"


async def test_concurrent_identical_reads_share_one() -> None:
    flight: SingleFlight[int] = SingleFlight()
    calls = 0

    async def read() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return calls

    assert await asyncio.gather(*(flight.run("k", read) for _ in range(10))) == [1] * 10
    assert calls == 1
    assert await flight.run("k", read) == 2


async def test_a_cancelled_shared_read_lets_the_others_read_themselves() -> None:
    flight: SingleFlight[str] = SingleFlight()
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(10)
        return "never"

    async def fast() -> str:
        return "own"

    leader = asyncio.ensure_future(flight.run("k", slow))
    await started.wait()
    follower = asyncio.ensure_future(flight.run("k", fast))
    await asyncio.sleep(0)
    leader.cancel()
    assert await follower == "own"


def test_importing_the_session_cache_registers_no_orm_listener() -> None:
    """Only the process that caches pays a listener on every ORM statement."""
    code = (
        "from sqlalchemy import event, orm\n"
        "from appliance.services import session_cache as c\n"
        "assert not event.contains(orm.Session, 'do_orm_execute', c._on_statement)\n"
        "c.watch_changes()\n"
        "assert event.contains(orm.Session, 'do_orm_execute', c._on_statement)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
