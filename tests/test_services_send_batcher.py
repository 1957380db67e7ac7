"""Group commit of sends: every send of a batch committed and enqueued, failures kept apart."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from appliance.auth.api_keys import create_api_key
from appliance.db.models import Message, MessageStatusEvent, Session
from appliance.db.types import new_id, utcnow
from appliance.errors import EnqueueFailed
from appliance.services.send_batcher import PendingSend, SendBatcher, send_alone
from tests.fixtures.killable_redis import KillableRedis

Db = async_sessionmaker[AsyncSession]


@pytest.fixture
async def owner(db_sessionmaker: Db) -> tuple[str, str]:
    key = await create_api_key(db_sessionmaker, name="t", role="tenant")
    session = Session(name="batch-1", upstream="whatsapp", owner_key_id=key.key.id)
    async with db_sessionmaker() as db, db.begin():
        db.add(session)
    return key.key.id, session.id


@pytest.fixture
async def batcher(db_engine: AsyncEngine, redis: aioredis.Redis) -> AsyncIterator[SendBatcher]:
    sends = SendBatcher(db_engine, redis)
    sends.start()
    yield sends
    await sends.stop()


def _pending(
    owner: tuple[str, str], *, idempotency_key: str | None = None, session_id: str | None = None
) -> PendingSend:
    key_id, default_session = owner
    message_id, now = str(uuid.uuid4()), utcnow()
    return PendingSend(
        message={
            "id": message_id,
            "session_id": session_id or default_session,
            "api_key_id": key_id,
            "direction": "out",
            "kind": "text",
            "chat": "4915112345678",
            "payload": {"text": message_id},
            "status": "queued",
            "wa_id": message_id.replace("-", "")[:22].upper(),
            "trace_id": None,
            "idempotency_key": idempotency_key,
            "request_hash": "h",
            "created_at": now,
            "updated_at": now,
        },
        status={
            "id": new_id(),
            "message_id": message_id,
            "status": "queued",
            "at": now,
            "trace_id": None,
            "detail": None,
        },
        stream="wapp:test:batch",
        data=message_id,
        idempotent=idempotency_key is not None,
    )


async def _stored(db: Db) -> tuple[set[str], set[str]]:
    async with db() as s:
        messages = set((await s.scalars(sa.select(Message.id))).all())
        statuses = set((await s.scalars(sa.select(MessageStatusEvent.message_id))).all())
    return messages, statuses


async def _enqueued(redis: aioredis.Redis) -> list[str]:
    return [fields[b"data"].decode() for _, fields in await redis.xrange("wapp:test:batch")]


async def test_concurrent_sends_are_all_committed_and_enqueued(
    batcher: SendBatcher, owner: tuple[str, str], db_sessionmaker: Db, redis: aioredis.Redis
) -> None:
    items = [_pending(owner) for _ in range(200)]
    assert await asyncio.gather(*(batcher.submit(i) for i in items)) == [True] * 200
    ids = {i.message["id"] for i in items}
    assert await _stored(db_sessionmaker) == (ids, ids)
    assert sorted(await _enqueued(redis)) == sorted(ids)
    # Batches (COPY on Postgres) store every column as a lone INSERT would.
    async with db_sessionmaker() as s:
        rows = {m.id: m for m in (await s.scalars(sa.select(Message))).all()}
        statuses = {e.message_id: e for e in (await s.scalars(sa.select(MessageStatusEvent)))}
    for item in items:
        row, status = rows[item.message["id"]], statuses[item.message["id"]]
        assert row.payload == item.message["payload"]
        assert row.created_at == item.message["created_at"]
        assert row.wa_id == item.message["wa_id"]
        assert status.at == item.status["at"]
        assert status.detail is None


async def test_a_failing_row_does_not_lose_the_others(
    batcher: SendBatcher, owner: tuple[str, str], db_sessionmaker: Db, redis: aioredis.Redis
) -> None:
    good = [_pending(owner) for _ in range(5)]
    bad = _pending(owner, session_id="no-such-session")  # a foreign key that fails
    results = await asyncio.gather(
        *(batcher.submit(i) for i in [*good[:2], bad, *good[2:]]), return_exceptions=True
    )
    assert results[:2] == [True, True]
    assert results[3:] == [True] * 3
    assert isinstance(results[2], sa.exc.IntegrityError)
    ids = {i.message["id"] for i in good}
    assert await _stored(db_sessionmaker) == (ids, ids)
    assert sorted(await _enqueued(redis)) == sorted(ids)


async def test_a_taken_idempotency_key_is_answered_false_and_the_first_send_stays(
    batcher: SendBatcher, owner: tuple[str, str], db_sessionmaker: Db, redis: aioredis.Redis
) -> None:
    first, twin, other = (
        _pending(owner, idempotency_key="k1"),
        _pending(owner, idempotency_key="k1"),
        _pending(owner, idempotency_key="k2"),
    )
    results = await asyncio.gather(*(batcher.submit(i) for i in [first, twin, other]))
    assert results == [True, False, True]
    ids = {first.message["id"], other.message["id"]}
    assert await _stored(db_sessionmaker) == (ids, ids)
    assert sorted(await _enqueued(redis)) == sorted(ids)
    # A later batch with the same key is refused the same way.
    assert await batcher.submit(_pending(owner, idempotency_key="k1")) is False


async def test_stop_finishes_what_is_queued(
    db_engine: AsyncEngine, redis: aioredis.Redis, owner: tuple[str, str]
) -> None:
    sends = SendBatcher(db_engine, redis)
    sends.start()
    waiting = [asyncio.ensure_future(sends.submit(_pending(owner))) for _ in range(20)]
    await asyncio.sleep(0)
    await sends.stop()
    assert [await w for w in waiting] == [True] * 20
    with pytest.raises(RuntimeError):
        await sends.submit(_pending(owner))


async def test_a_waiter_that_goes_away_does_not_take_its_send_with_it(
    batcher: SendBatcher, owner: tuple[str, str], db_sessionmaker: Db, redis: aioredis.Redis
) -> None:
    items = [_pending(owner) for _ in range(10)]
    waiting = [asyncio.ensure_future(batcher.submit(i)) for i in items]
    await asyncio.sleep(0)  # all queued
    waiting[3].cancel()  # as when a client disconnects mid-request
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 3] == [True] * 9
    ids = {i.message["id"] for i in items}
    assert await _stored(db_sessionmaker) == (ids, ids)
    assert sorted(await _enqueued(redis)) == sorted(ids)


async def test_a_batch_stores_every_column_as_text_exactly_as_a_lone_insert_does(
    batcher: SendBatcher, owner: tuple[str, str], db_sessionmaker: Db, db_engine: AsyncEngine
) -> None:
    """Batches bypass Core (SQLite: multi-row INSERTs of values made by hand; Postgres:
    arrays through unnest): the stored values must be the very ones Core stores, or
    comparisons and cursors break."""
    from datetime import timedelta

    when = utcnow().replace(microsecond=0) + timedelta(hours=1)  # .000000 included
    alone = _pending(owner, idempotency_key="alone")
    many = [_pending(owner, idempotency_key=f"k{i}") for i in range(300)]  # > one chunk
    for item in [alone, *many]:
        item.message.update(created_at=when, updated_at=when, payload={"a": [1, "ü"]})
        item.status["at"] = when
    async with db_engine.begin() as conn:  # the reference: a Core INSERT
        await conn.execute(sa.insert(Message.__table__), [alone.message])  # type: ignore[attr-defined]
        await conn.execute(sa.insert(MessageStatusEvent.__table__), [alone.status])  # type: ignore[attr-defined]
    assert await asyncio.gather(*(batcher.submit(i) for i in many)) == [True] * 300

    columns = "id, created_at, updated_at, payload, status, wa_id, request_hash"
    async with db_sessionmaker() as s:
        rows = {
            r[0]: r[1:] for r in (await s.execute(sa.text(f"SELECT {columns} FROM messages"))).all()
        }
        statuses = {
            r[0]: r[1:]
            for r in (
                await s.execute(sa.text("SELECT message_id, at, detail FROM message_status_events"))
            ).all()
        }
    reference = rows[alone.message["id"]]
    for item in many:
        stored = rows[item.message["id"]]
        assert stored[:4] == reference[:4]  # created_at, updated_at, payload, status
        assert stored[4] == item.message["wa_id"]
        assert statuses[item.message["id"]] == statuses[alone.message["id"]]


async def test_a_write_lock_held_elsewhere_is_waited_for_off_the_event_loop(
    batcher: SendBatcher, owner: tuple[str, str], db_sessionmaker: Db, database_url: str
) -> None:
    """SQLite batches commit on the event loop; a lock another process holds must not
    stop the loop while the batch waits for it (or that process could never finish)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock; Postgres locks rows, not the database")
    other = sqlite3.connect(sa.engine.make_url(database_url).database or "", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        item = _pending(owner)
        send = asyncio.create_task(batcher.submit(item))
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(10):
            await asyncio.sleep(0.01)
        assert loop.time() - started < 1.0  # the loop ran on while the send waited
        assert not send.done()
    finally:
        other.execute("COMMIT")
        other.close()
    assert await asyncio.wait_for(send, 10) is True
    ids = {item.message["id"]}
    assert await _stored(db_sessionmaker) == (ids, ids)


async def test_sends_go_on_after_the_server_drops_the_connections(
    batcher: SendBatcher, owner: tuple[str, str], db_sessionmaker: Db, database_url: str
) -> None:
    """On Postgres the flush task keeps its connection while sends keep coming: one the
    server dropped (a restart, an admin) must cost a retry, never a send."""
    if database_url.startswith("sqlite"):
        pytest.skip("a Postgres server drops connections; a SQLite file has none to drop")
    before = [_pending(owner) for _ in range(20)]
    assert await asyncio.gather(*(batcher.submit(i) for i in before)) == [True] * 20
    async with db_sessionmaker() as s:
        await s.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    after = [_pending(owner) for _ in range(20)]
    assert await asyncio.gather(*(batcher.submit(i) for i in after)) == [True] * 20
    ids = {i.message["id"] for i in before + after}
    assert await _stored(db_sessionmaker) == (ids, ids)


async def test_a_committed_send_whose_xadd_fails_hears_its_id_and_the_sweep_is_told(
    db_engine: AsyncEngine,
    killable_redis: KillableRedis,
    owner: tuple[str, str],
    db_sessionmaker: Db,
) -> None:
    """Redis refuses the XADD after the commit: each waiter hears `EnqueueFailed` with
    its own (real, committed) message id, never a bare connection error."""
    told: list[bool] = []
    client = aioredis.Redis.from_url(killable_redis.url)
    sends = SendBatcher(db_engine, client, on_enqueue_failed=lambda: told.append(True))
    sends.start()
    try:
        killable_redis.kill()
        items = [_pending(owner) for _ in range(5)]
        results = await asyncio.gather(*(sends.submit(i) for i in items), return_exceptions=True)
    finally:
        await sends.stop()
        await client.aclose()
    for item, result in zip(items, results, strict=True):
        assert isinstance(result, EnqueueFailed), result
        assert result.details["messageId"] == item.message["id"]
    ids = {i.message["id"] for i in items}
    assert await _stored(db_sessionmaker) == (ids, ids)
    assert told


async def test_a_send_alone_commits_and_enqueues_and_answers_false_for_a_taken_key(
    redis: aioredis.Redis, owner: tuple[str, str], db_sessionmaker: Db
) -> None:
    """Without a running batcher (the CLI): the same rows, the same XADD, the same
    answer for a taken Idempotency-Key."""
    first = _pending(owner, idempotency_key="same")
    assert await send_alone(db_sessionmaker.begin, redis, first, maxlen=1000) is True
    twin = _pending(owner, idempotency_key="same")
    assert await send_alone(db_sessionmaker.begin, redis, twin, maxlen=1000) is False
    ids = {first.message["id"]}
    assert await _stored(db_sessionmaker) == (ids, ids)
    assert await _enqueued(redis) == [first.message["id"]]


async def test_a_send_alone_whose_xadd_fails_raises_enqueue_failed_with_its_id(
    killable_redis: KillableRedis, owner: tuple[str, str], db_sessionmaker: Db
) -> None:
    client = aioredis.Redis.from_url(killable_redis.url)
    item = _pending(owner)
    try:
        killable_redis.kill()
        with pytest.raises(EnqueueFailed) as info:
            await send_alone(db_sessionmaker.begin, client, item, maxlen=1000)
    finally:
        await client.aclose()
    assert info.value.details["messageId"] == item.message["id"]
    ids = {item.message["id"]}
    assert await _stored(db_sessionmaker) == (ids, ids)  # the sweep's to enqueue
