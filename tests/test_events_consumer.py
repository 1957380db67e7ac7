from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.contracts import (
    CommandRejectedEvent,
    CommandRejectedPayload,
    Me,
    MessageReceivedEvent,
    MessageReceivedPayload,
    MessageStatusEvent,
    MessageStatusPayload,
    SessionStateEvent,
    SessionStatePayload,
)
from appliance.db.models import Message, ProcessedEvent, Session
from appliance.db.models import MessageStatusEvent as StatusRow
from appliance.events import ephemeral
from appliance.events.consumer import EventConsumer, consumer_name, liveness_key
from appliance.redis_keys import API_CONSUMER_GROUP, EVENTS_STREAM

Sessions = async_sessionmaker[AsyncSession]
ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def xadd(redis: aioredis.Redis, *events: object) -> None:
    for event in events:
        await redis.xadd(EVENTS_STREAM, {"data": event.model_dump_json()})  # type: ignore[attr-defined]


@pytest.fixture
async def session_row(db_sessionmaker: Sessions) -> Session:
    row = Session(name="sales-1", upstream="sandbox", state="connecting")
    row.state_changed_at = T0
    async with db_sessionmaker() as db, db.begin():
        db.add(row)
    return row


@pytest.fixture
async def outbound(db_sessionmaker: Sessions, session_row: Session) -> Message:
    message = Message(
        session_id=session_row.id,
        direction="out",
        kind="text",
        chat="4915112345678",
        payload={"text": "hi"},
        status="queued",
    )
    async with db_sessionmaker() as db, db.begin():
        db.add(message)
    return message


@pytest.fixture
def consumer(redis: aioredis.Redis, db_sessionmaker: Sessions) -> EventConsumer:
    return EventConsumer(redis=redis, writer=db_sessionmaker, block_ms=100, claim_idle_ms=0)


def state(st: str, at: datetime, **kw: object) -> SessionStateEvent:
    return SessionStateEvent(
        session="sales-1",
        timestamp=at,
        payload=SessionStatePayload(state=st, **kw),  # type: ignore[arg-type]
    )


def status(message: Message, st: str, at: datetime, **kw: object) -> MessageStatusEvent:
    return MessageStatusEvent(
        session="sales-1",
        timestamp=at,
        trace_id="trace-1",
        payload=MessageStatusPayload(message_id=uuid.UUID(message.id), status=st, **kw),  # type: ignore[arg-type]
    )


def received(wa_id: str = "WA1") -> MessageReceivedEvent:
    return MessageReceivedEvent(
        session="sales-1",
        payload=MessageReceivedPayload(
            wa_id=wa_id,
            chat="4915100000001@s.whatsapp.net",
            from_pn="4915100000001@s.whatsapp.net",
            from_lid="111@lid",
            sent_at=T0,
            kind="text",
            text="hello",
        ),
    )


async def drain(consumer: EventConsumer) -> int:
    await consumer.ensure_group()
    total = 0
    while handled := await consumer.read_once(block_ms=50):
        total += handled
    return total


async def snapshot(db_sessionmaker: Sessions) -> tuple[object, ...]:
    async with db_sessionmaker() as db:
        sessions = (
            await db.execute(sa.select(Session.state, Session.me_jid, Session.paired_at))
        ).all()
        messages = (
            await db.execute(
                sa.select(Message.id, Message.status, Message.wa_id).order_by(Message.id)
            )
        ).all()
        statuses = (
            await db.execute(
                sa.select(StatusRow.message_id, StatusRow.status).order_by(StatusRow.status)
            )
        ).all()
        processed = await db.scalar(sa.select(sa.func.count()).select_from(ProcessedEvent))
    return tuple(sessions), tuple(messages), tuple(statuses), processed


async def test_events_are_persisted_and_acked(
    consumer: EventConsumer, redis: aioredis.Redis, db_sessionmaker: Sessions, outbound: Message
) -> None:
    me = Me(jid="4915199999999:1@s.whatsapp.net", lid="999:1@lid", push_name="Shop")
    await xadd(
        redis,
        state("connected", T0 + timedelta(seconds=1), me=me),
        status(outbound, "sending", T0 + timedelta(seconds=2), wa_id="3EB0X"),
        status(outbound, "sent", T0 + timedelta(seconds=3)),
        status(outbound, "delivered", T0 + timedelta(seconds=4)),
        received(),
    )
    assert await drain(consumer) == 5
    async with db_sessionmaker() as db:
        session = (await db.scalars(sa.select(Session))).one()
        message = await db.get(Message, outbound.id)
        timeline = (
            await db.scalars(sa.select(StatusRow.status).where(StatusRow.message_id == outbound.id))
        ).all()
        inbound = (await db.scalars(sa.select(Message).where(Message.direction == "in"))).one()
    assert (session.state, session.me_jid, session.paired_at) == (
        "connected",
        me.jid,
        T0 + timedelta(seconds=1),
    )
    assert message is not None
    assert (message.status, message.wa_id, message.sent_at) == (
        "delivered",
        "3EB0X",
        T0 + timedelta(seconds=3),
    )
    assert sorted(timeline) == ["delivered", "sending", "sent"]
    assert (inbound.wa_id, inbound.status, inbound.payload["text"]) == ("WA1", "received", "hello")
    pending = await redis.xpending(EVENTS_STREAM, API_CONSUMER_GROUP)
    assert pending["pending"] == 0


async def test_replaying_the_stream_twice_changes_nothing(
    consumer: EventConsumer, redis: aioredis.Redis, db_sessionmaker: Sessions, outbound: Message
) -> None:
    await xadd(
        redis,
        state("connected", T0 + timedelta(seconds=1)),
        status(outbound, "read", T0 + timedelta(seconds=5)),
        received(),
    )
    await drain(consumer)
    before = await snapshot(db_sessionmaker)
    # Replay everything from the start of the stream, as after a lost ack.
    await redis.xgroup_setid(EVENTS_STREAM, API_CONSUMER_GROUP, id="0")
    assert await drain(consumer) == 3
    # And the same events written again (a producer retry): same ids, nothing new.
    entries = await redis.xrange(EVENTS_STREAM)
    for _, fields in entries:
        await redis.xadd(EVENTS_STREAM, fields)
    await drain(consumer)
    assert await snapshot(db_sessionmaker) == before


async def test_a_late_older_state_does_not_roll_the_session_back(
    consumer: EventConsumer, redis: aioredis.Redis, db_sessionmaker: Sessions, session_row: Session
) -> None:
    await xadd(
        redis,
        state("connected", T0 + timedelta(seconds=10)),
        state("qr", T0 + timedelta(seconds=5), qr="old"),
    )
    await drain(consumer)
    async with db_sessionmaker() as db:
        assert (await db.get(Session, session_row.id)).state == "connected"  # type: ignore[union-attr]


async def test_a_status_never_moves_backwards_and_failed_does_not_hide_a_delivery(
    consumer: EventConsumer, redis: aioredis.Redis, db_sessionmaker: Sessions, outbound: Message
) -> None:
    await xadd(
        redis,
        status(outbound, "read", T0 + timedelta(seconds=3)),
        status(outbound, "delivered", T0 + timedelta(seconds=4)),
        status(outbound, "failed", T0 + timedelta(seconds=5), code="X", reason="late"),
    )
    await drain(consumer)
    async with db_sessionmaker() as db:
        assert (await db.get(Message, outbound.id)).status == "read"  # type: ignore[union-attr]


async def test_a_rejected_send_command_fails_its_message(
    consumer: EventConsumer, redis: aioredis.Redis, db_sessionmaker: Sessions, outbound: Message
) -> None:
    rejected = CommandRejectedEvent(
        session="sales-1",
        payload=CommandRejectedPayload(
            command_id=outbound.id,
            command_type="send_text",
            code="UNKNOWN_SESSION",
            reason="not here",
        ),
    )
    await xadd(redis, rejected)
    await drain(consumer)
    async with db_sessionmaker() as db:
        message = await db.get(Message, outbound.id)
    assert message is not None
    assert (message.status, message.error_code) == ("failed", "UNKNOWN_SESSION")


async def test_a_poison_entry_is_acked_and_does_not_block_the_next(
    consumer: EventConsumer, redis: aioredis.Redis, db_sessionmaker: Sessions, session_row: Session
) -> None:
    await redis.xadd(EVENTS_STREAM, {"data": b"{not json"})
    await redis.xadd(EVENTS_STREAM, {"data": orjson.dumps({"type": "session.exploded"})})
    await redis.xadd(EVENTS_STREAM, {"other": b"x"})
    await xadd(redis, state("connected", T0 + timedelta(seconds=1)))
    assert await drain(consumer) == 4
    async with db_sessionmaker() as db:
        assert (await db.get(Session, session_row.id)).state == "connected"  # type: ignore[union-attr]
    assert (await redis.xpending(EVENTS_STREAM, API_CONSUMER_GROUP))["pending"] == 0


async def test_what_a_crashed_consumer_left_pending_is_claimed(
    consumer: EventConsumer, redis: aioredis.Redis, db_sessionmaker: Sessions, session_row: Session
) -> None:
    await consumer.ensure_group()
    await xadd(redis, state("connected", T0 + timedelta(seconds=1)))
    # A consumer that read and died before committing or acking.
    await redis.xreadgroup(API_CONSUMER_GROUP, "dead-one", {EVENTS_STREAM: ">"}, count=10)
    assert await consumer.read_once(block_ms=50) == 0
    assert await consumer.claim_stale() == 1
    async with db_sessionmaker() as db:
        assert (await db.get(Session, session_row.id)).state == "connected"  # type: ignore[union-attr]
    assert (await redis.xpending(EVENTS_STREAM, API_CONSUMER_GROUP))["pending"] == 0


async def test_the_current_qr_lives_in_redis_until_it_expires_or_the_session_connects(
    consumer: EventConsumer, redis: aioredis.Redis, session_row: Session
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=30)
    await xadd(redis, state("qr", datetime.now(UTC), qr="2@abc,def", qr_expires_at=expires))
    await drain(consumer)
    stored = orjson.loads(await redis.get(ephemeral.qr_key("sales-1")))
    assert stored["qr"] == "2@abc,def"
    assert 0 < await redis.pttl(ephemeral.qr_key("sales-1")) <= 30_000
    await xadd(redis, state("connected", datetime.now(UTC) + timedelta(seconds=1)))
    await drain(consumer)
    assert await redis.get(ephemeral.qr_key("sales-1")) is None


async def test_an_event_for_an_unknown_session_is_recorded_and_skipped(
    consumer: EventConsumer, redis: aioredis.Redis, db_sessionmaker: Sessions
) -> None:
    await xadd(
        redis, SessionStateEvent(session="ghost", payload=SessionStatePayload(state="connected"))
    )
    assert await drain(consumer) == 1
    async with db_sessionmaker() as db:
        assert await db.scalar(sa.select(sa.func.count()).select_from(Session)) == 0


async def test_a_killed_consumers_events_are_claimed_at_once_by_the_next_one(
    redis: aioredis.Redis, redis_url: str, db_sessionmaker: Sessions, session_row: Session
) -> None:
    """kill -9 of an api worker that had read events without acking them: a new consumer
    applies them within a couple of seconds, not after the 60 s idle threshold."""
    first = EventConsumer(redis=redis, writer=db_sessionmaker)
    await first.ensure_group()
    await xadd(redis, state("connected", T0 + timedelta(seconds=1)))
    dying = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fixtures.dying_consumer",
        redis_url,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert dying.stdout is not None
        line = await asyncio.wait_for(dying.stdout.readline(), 30)
        assert line.strip() == b"1"  # it holds the event, unacked
    finally:
        dying.kill()  # SIGKILL: no ack, no cleanup, its liveness key stays behind
        await dying.wait()
    [dead] = await redis.xinfo_consumers(EVENTS_STREAM, API_CONSUMER_GROUP)
    assert dead["pending"] == 1
    assert await redis.exists(liveness_key(dead["name"].decode()))

    restarted = EventConsumer(redis=redis, writer=db_sessionmaker, block_ms=100)  # 60 s idle
    started = asyncio.get_running_loop().time()
    restarted.start()
    try:
        # Applied and acked: the ack follows the commit, so both are waited for. The bound
        # is far below the 60 s idle threshold a claim would otherwise wait for.
        while asyncio.get_running_loop().time() - started < 5.0:
            async with db_sessionmaker() as db:
                row = await db.get(Session, session_row.id)
            pending = (await redis.xpending(EVENTS_STREAM, API_CONSUMER_GROUP))["pending"]
            if row is not None and row.state == "connected" and pending == 0:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the dead consumer's event was not applied and acked within 5 s")
    finally:
        await restarted.stop()
    # The dead one is gone from the group (the stopped one, too, left nothing pending).
    names = {
        c["name"].decode() for c in await redis.xinfo_consumers(EVENTS_STREAM, API_CONSUMER_GROUP)
    }
    assert dead["name"].decode() not in names


async def test_a_live_consumers_pending_events_are_left_to_it(
    consumer: EventConsumer, redis: aioredis.Redis, session_row: Session
) -> None:
    await consumer.ensure_group()
    await xadd(redis, state("connected", T0 + timedelta(seconds=1)))
    # Another worker of this very host, alive: its process runs and its key is fresh.
    alive = consumer_name().replace(f":{os.getpid()}:", f":{os.getppid()}:")
    await redis.set(liveness_key(alive), b"1", ex=30)
    await redis.xreadgroup(API_CONSUMER_GROUP, alive, {EVENTS_STREAM: ">"}, count=10)
    assert await consumer.claim_orphans() == 0
    assert (await redis.xpending(EVENTS_STREAM, API_CONSUMER_GROUP))["pending"] == 1


async def test_a_qr_event_leaves_the_stream_once_handled_and_others_stay(
    consumer: EventConsumer, redis: aioredis.Redis, session_row: Session
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=30)
    await xadd(
        redis,
        state("qr", datetime.now(UTC), qr="2@secret-ref,adv-secret", qr_expires_at=expires),
        state("pairing_code", datetime.now(UTC), pairing_code="ABCD1234"),
        state("connecting", datetime.now(UTC)),
    )
    assert await drain(consumer) == 3
    left = [orjson.loads(fields[b"data"]) for _, fields in await redis.xrange(EVENTS_STREAM)]
    assert [e["payload"]["state"] for e in left] == ["connecting"]
    assert b"adv-secret" not in b"".join(orjson.dumps(e) for e in left)
    # Handled first: the current QR is there for GET .../qr until it expires.
    assert (
        orjson.loads(await redis.get(ephemeral.qr_key("sales-1")))["qr"]
        == "2@secret-ref,adv-secret"
    )
