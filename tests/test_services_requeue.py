"""The database is the system of record for sends: a committed row whose
command is not in Redis is always enqueued, by a retry's replay or by the sweep; a send
whose enqueue fails answers 503 with its real id, never a 500."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance import redis_keys
from appliance.contracts import wa_message_id
from appliance.db.models import Message, Session
from appliance.db.types import utcnow
from appliance.services import commands, requeue
from appliance.settings import Settings
from tests.fixtures.api import ApiClientFactory, auth
from tests.fixtures.api_helpers import connected_session, session_commands
from tests.fixtures.killable_redis import KillableRedis
from tests.fixtures.settings import MakeSettings

Db = async_sessionmaker[AsyncSession]
TO = "4915112345678"
STREAM = redis_keys.session_commands_stream("sales-1")


@pytest.fixture
def settings_on_killable(
    make_settings: MakeSettings, database_url: str, killable_redis: KillableRedis
) -> Settings:
    return make_settings(database={"url": database_url}, redis={"url": killable_redis.url})


@pytest.fixture
async def kredis(killable_redis: KillableRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(killable_redis.url)
    try:
        yield client
    finally:
        await client.aclose()


async def _send(client: httpx.AsyncClient, key: str, idempotency_key: str) -> httpx.Response:
    return await client.post(
        "/v1/sessions/sales-1/messages",
        json={"type": "text", "to": TO, "text": idempotency_key},
        headers={**auth(key), "Idempotency-Key": idempotency_key},
    )


async def _outbound_ids(db: Db) -> set[str]:
    async with db() as s:
        return set((await s.scalars(sa.select(Message.id).where(Message.direction == "out"))).all())


async def _stream_ids(redis: aioredis.Redis) -> Counter[str]:
    return Counter(str(c.id) for c in await session_commands(redis, "sales-1"))


def _assert_retryable_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] in ("ENQUEUE_FAILED", "REDIS_UNAVAILABLE")
    assert body["error"]["details"]["retryable"] is True
    assert int(response.headers["Retry-After"]) >= 1


async def test_a_send_redis_refuses_answers_503_with_its_id_and_is_enqueued_by_retry_or_sweep(
    api_client_for: ApiClientFactory,
    settings_on_killable: Settings,
    killable_redis: KillableRedis,
    kredis: aioredis.Redis,
    admin_key: str,
    db_sessionmaker: Db,
) -> None:
    async with api_client_for(settings_on_killable) as client:
        await connected_session(client, admin_key, db_sessionmaker)
        # Within the bad-key throttle's 1 s memory of this address, so auth does not
        # need Redis for the sends below: only their XADDs meet the dead Redis.
        assert (await _send(client, admin_key, "before")).status_code == 202
        killable_redis.kill()
        failed = await asyncio.gather(*(_send(client, admin_key, f"k{i}") for i in range(10)))
        killable_redis.start()
    for response in failed:
        _assert_retryable_503(response)
        assert response.json()["error"]["code"] == "ENQUEUE_FAILED"
    ids = [r.json()["error"]["details"]["messageId"] for r in failed]
    # The ids are real: the rows are committed, waiting to be enqueued.
    assert set(ids) <= await _outbound_ids(db_sessionmaker)
    assert not set(ids) & set(await _stream_ids(kredis))

    async with api_client_for(settings_on_killable) as client:
        # The careful client retries half with the same keys: 202, the same ids, and
        # now their commands are in the stream (once, however often it retries).
        for i in range(5):
            for _ in range(2):
                again = await _send(client, admin_key, f"k{i}")
                assert again.status_code == 202, again.text
                assert again.json()["id"] == ids[i]
                assert again.json()["waId"] == wa_message_id(uuid.UUID(ids[i]))
        in_stream = await _stream_ids(kredis)
        assert all(in_stream[i] == 1 for i in ids[:5])
        assert not set(ids[5:]) & set(in_stream)
        # The others never retry: the sweep enqueues them, once.
        assert await requeue.sweep(db_sessionmaker, kredis, min_age_s=0) == 5
        assert await requeue.sweep(db_sessionmaker, kredis, min_age_s=0) == 0
    in_stream = await _stream_ids(kredis)
    assert set(in_stream) == await _outbound_ids(db_sessionmaker)
    assert set(in_stream.values()) == {1}


async def test_redis_killed_mid_burst_loses_and_duplicates_nothing(
    api_client_for: ApiClientFactory,
    settings_on_killable: Settings,
    killable_redis: KillableRedis,
    kredis: aioredis.Redis,
    admin_key: str,
    db_sessionmaker: Db,
) -> None:
    """A chaos run: kill -9 of Redis mid-burst, refused for 0.4 s, and a
    client that retries every failed request with its Idempotency-Key."""
    async with api_client_for(settings_on_killable) as client:
        await connected_session(client, admin_key, db_sessionmaker)
        keys = [f"burst-{i}" for i in range(300)]
        tasks = [asyncio.create_task(_send(client, admin_key, k)) for k in keys]
        some_answered = asyncio.Event()
        for task in tasks:
            task.add_done_callback(
                lambda _: some_answered.set() if sum(t.done() for t in tasks) >= 30 else None
            )
        await some_answered.wait()
        killable_redis.kill()
        await asyncio.sleep(0.4)
        killable_redis.start()
        answers = dict(zip(keys, await asyncio.gather(*tasks), strict=True))
        assert {r.status_code for r in answers.values()} <= {202, 503}
        accepted: dict[str, str] = {}
        for _ in range(50):
            retry = [k for k, r in answers.items() if r.status_code != 202]
            if not retry:
                break
            for key in retry:
                response = answers[key] = await _send(client, admin_key, key)
                if response.status_code != 202:
                    _assert_retryable_503(response)
            await asyncio.sleep(0.1)
        for key, response in answers.items():
            assert response.status_code == 202, response.text
            accepted[key] = response.json()["id"]
    assert len(set(accepted.values())) == len(keys)
    assert set(accepted.values()) == await _outbound_ids(db_sessionmaker)
    in_stream = await _stream_ids(kredis)
    assert set(in_stream) == set(accepted.values())
    assert set(in_stream.values()) == {1}


def _payload(message_id: str) -> dict[str, object]:
    return {
        "message_id": message_id,
        "wa_id": wa_message_id(uuid.UUID(message_id)),
        "to": TO,
        "quoted": None,
        "mentions": [],
        "text": "hello",
    }


async def _row(db: Db, session_id: str, *, status: str = "queued", age_s: float = 120) -> str:
    """A committed send as the batcher writes it, `age_s` old, with no command anywhere."""
    message_id = uuid.uuid4()
    at = utcnow() - timedelta(seconds=age_s)
    row = Message(
        id=str(message_id),
        session_id=session_id,
        direction="out",
        kind="text",
        chat=TO,
        payload=_payload(str(message_id)),
        status=status,
        wa_id=wa_message_id(message_id),
        trace_id="trace-of-the-send",
        created_at=at,
        updated_at=at,
    )
    async with db() as s, s.begin():
        s.add(row)
    return row.id


async def _session_row(db: Db, name: str = "sales-1", state: str = "connected") -> str:
    row = Session(name=name, upstream="whatsapp", state=state)
    async with db() as s, s.begin():
        s.add(row)
    return row.id


async def test_an_api_that_died_between_commit_and_enqueue_is_covered_at_start(
    api_client_for: ApiClientFactory,
    database_url: str,
    make_settings: MakeSettings,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
) -> None:
    session_id = await _session_row(db_sessionmaker)
    stopped_id = await _session_row(db_sessionmaker, "stopped-1", "stopped")
    lost = await _row(db_sessionmaker, session_id)
    lost_sending = await _row(db_sessionmaker, session_id, status="sending")
    lost_while_stopped = await _row(db_sessionmaker, stopped_id)
    marked = await _row(db_sessionmaker, session_id)  # the engine has it
    await redis.set(redis_keys.sent_mark_key(marked), "sending")
    waiting = await _row(db_sessionmaker, session_id)  # in the stream, not yet read
    command = commands.build(
        "send_text", session="sales-1", payload=_payload(waiting), command_id=uuid.UUID(waiting)
    )
    await commands.enqueue(redis, command, upstream="whatsapp")
    young = await _row(db_sessionmaker, session_id, age_s=0)  # may still be on its way
    await _row(db_sessionmaker, session_id, status="sent")
    await _row(db_sessionmaker, session_id, status="failed")

    async with api_client_for(make_settings(database={"url": database_url})):
        for _ in range(100):
            if len(await redis.xrange(STREAM)) >= 3:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
    found = await session_commands(redis, "sales-1")
    assert Counter(str(c.id) for c in found) == Counter([waiting, lost, lost_sending])
    [stopped] = await session_commands(redis, "stopped-1")  # waits there for a start
    assert str(stopped.id) == lost_while_stopped
    # The command as first built: its type, payload and trace id.
    first = next(c for c in found if str(c.id) == lost)
    assert (first.type, first.payload.text, first.trace_id) == (
        "send_text",
        "hello",
        "trace-of-the-send",
    )
    assert young not in {str(c.id) for c in found}


async def test_concurrent_sweeps_of_several_workers_enqueue_each_row_once(
    redis: aioredis.Redis, db_sessionmaker: Db
) -> None:
    session_id = await _session_row(db_sessionmaker)
    lost = {await _row(db_sessionmaker, session_id) for _ in range(20)}
    counts = await asyncio.gather(
        *(requeue.sweep(db_sessionmaker, redis, min_age_s=0) for _ in range(4))
    )
    assert sum(counts) == 20
    assert Counter(str(c.id) for c in await session_commands(redis, "sales-1")) == Counter(lost)
    assert await redis.get(requeue.LOCK_KEY) is None  # released for the next sweep


async def test_a_multipart_send_redis_refuses_keeps_its_row_and_its_upload(
    api_client_for: ApiClientFactory,
    settings_on_killable: Settings,
    killable_redis: KillableRedis,
    kredis: aioredis.Redis,
    admin_key: str,
    db_sessionmaker: Db,
) -> None:
    async with api_client_for(settings_on_killable) as client:
        await connected_session(client, admin_key, db_sessionmaker)
        assert (await _send(client, admin_key, "before")).status_code == 202
        killable_redis.kill()
        response = await client.post(
            "/v1/sessions/sales-1/messages",
            data={"message": orjson.dumps({"type": "voice", "to": TO}).decode()},
            files={"file": ("note.ogg", b"OggS" + b"\x01" * 100, "audio/ogg")},
            headers={**auth(admin_key), "Idempotency-Key": "voice-1"},
        )
        killable_redis.start()
    _assert_retryable_503(response)
    message_id = response.json()["error"]["details"]["messageId"]
    async with db_sessionmaker() as s:
        row = await s.get(Message, message_id)
    assert row is not None
    assert row.status == "queued"
    # The engine will need the blob when the sweep enqueues the send.
    assert await asyncio.to_thread(Path(row.payload["blob_path"]).exists)
    assert await requeue.sweep(db_sessionmaker, kredis, min_age_s=0) == 1
