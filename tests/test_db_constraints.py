from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance.db.models import (
    ApiKey,
    Message,
    MessageStatusEvent,
    ProcessedEvent,
    Session,
    Table,
    Webhook,
    WebhookDelivery,
)
from appliance.db.statements import insert_or_ignore
from appliance.db.types import new_id

Maker = async_sessionmaker[AsyncSession]


async def _add(maker: Maker, *rows: Table) -> None:
    async with maker() as session, session.begin():
        session.add_all(rows)


async def _count(maker: Maker, model: type[Table]) -> int:
    async with maker() as session:
        return (await session.execute(sa.select(sa.func.count()).select_from(model))).scalar_one()


def _key() -> ApiKey:
    return ApiKey(name="k", secret_hash="h", role="tenant")


def _session(owner: ApiKey | None = None, name: str = "sales-1") -> Session:
    return Session(name=name, upstream="sandbox", owner_key_id=owner.id if owner else None)


def _message(session: Session, key: ApiKey | None = None, **extra: Any) -> Message:
    values: dict[str, Any] = {
        "session_id": session.id,
        "api_key_id": key.id if key else None,
        "direction": "out",
        "kind": "text",
        "chat": "4915112345678",
        "payload": {"text": "hi"},
        "status": "queued",
        **extra,
    }
    return Message(**values)


async def test_a_message_of_an_unknown_session_violates_the_foreign_key(
    db_sessionmaker: Maker,
) -> None:
    orphan = _message(Session(id=new_id(), name="ghost", upstream="sandbox"))
    with pytest.raises(IntegrityError):
        await _add(db_sessionmaker, orphan)


async def test_deleting_a_session_deletes_its_messages_and_their_timeline(
    db_sessionmaker: Maker,
) -> None:
    session = _session()
    message = _message(session)
    event = MessageStatusEvent(message_id=message.id, status="queued", at=datetime.now(UTC))
    await _add(db_sessionmaker, session)
    await _add(db_sessionmaker, message)
    await _add(db_sessionmaker, event)
    async with db_sessionmaker() as db, db.begin():
        await db.execute(sa.delete(Session).where(col(Session.id) == session.id))
    assert await _count(db_sessionmaker, Message) == 0
    assert await _count(db_sessionmaker, MessageStatusEvent) == 0


async def test_an_idempotency_key_is_unique_per_api_key(db_sessionmaker: Maker) -> None:
    alice, bob = _key(), _key()
    session = _session(alice)
    await _add(db_sessionmaker, alice, bob)
    await _add(db_sessionmaker, session)
    await _add(db_sessionmaker, _message(session, alice, idempotency_key="k1", request_hash="a"))
    # The same key from another api key is another request.
    await _add(db_sessionmaker, _message(session, bob, idempotency_key="k1", request_hash="a"))
    with pytest.raises(IntegrityError):
        await _add(db_sessionmaker, _message(session, alice, idempotency_key="k1"))
    # No key at all never collides.
    await _add(db_sessionmaker, _message(session, alice), _message(session, alice))
    assert await _count(db_sessionmaker, Message) == 4


async def test_a_message_has_at_most_one_event_per_status(db_sessionmaker: Maker) -> None:
    session = _session()
    message = _message(session)
    await _add(db_sessionmaker, session)
    await _add(db_sessionmaker, message)
    now = datetime.now(UTC)
    await _add(db_sessionmaker, MessageStatusEvent(message_id=message.id, status="sent", at=now))
    with pytest.raises(IntegrityError):
        await _add(
            db_sessionmaker, MessageStatusEvent(message_id=message.id, status="sent", at=now)
        )


async def test_replaying_the_same_events_twice_changes_nothing(db_sessionmaker: Maker) -> None:
    session = _session()
    message = _message(session)
    await _add(db_sessionmaker, session)
    await _add(db_sessionmaker, message)
    now = datetime.now(UTC)
    event_id = new_id()

    def replay_rows() -> list[Table]:
        # Fresh objects with fresh primary keys each time, as a consumer would build them.
        return [
            ProcessedEvent(event_id=event_id, event_type="message.status"),
            MessageStatusEvent(message_id=message.id, status="delivered", at=now),
            _message(session, direction="in", status="received", wa_id="3EB0ABC", chat="x@s"),
        ]

    inserted = []
    for _ in range(2):
        async with db_sessionmaker() as db, db.begin():
            inserted.append([await insert_or_ignore(db, row) for row in replay_rows()])
    assert inserted == [[True, True, True], [False, False, False]]
    assert await _count(db_sessionmaker, ProcessedEvent) == 1
    assert await _count(db_sessionmaker, MessageStatusEvent) == 1
    assert await _count(db_sessionmaker, Message) == 2


async def test_an_event_is_queued_once_per_webhook(db_sessionmaker: Maker) -> None:
    owner = _key()
    hook = Webhook(owner_key_id=owner.id, url="https://example.com/h", secret_encrypted="x")
    await _add(db_sessionmaker, owner)
    await _add(db_sessionmaker, hook)
    event_id = new_id()

    def delivery() -> WebhookDelivery:
        return WebhookDelivery(
            webhook_id=hook.id,
            event_id=event_id,
            event_type="message.status",
            session="sales-1",
            event_at=datetime.now(UTC),
            payload={"id": event_id},
        )

    await _add(db_sessionmaker, delivery())
    with pytest.raises(IntegrityError):
        await _add(db_sessionmaker, delivery())


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        ("key", "role", "root"),
        ("session", "upstream", "telegram"),
        ("message", "status", "lost"),
        ("message", "direction", "sideways"),
    ],
)
async def test_values_outside_their_set_are_refused(
    db_sessionmaker: Maker, model: str, field: str, value: str
) -> None:
    session = _session()
    await _add(db_sessionmaker, session)
    row: Table = {"key": _key(), "session": _session(name="other"), "message": _message(session)}[
        model
    ]
    setattr(row, field, value)
    with pytest.raises(IntegrityError):
        await _add(db_sessionmaker, row)


async def test_session_names_are_unique(db_sessionmaker: Maker) -> None:
    await _add(db_sessionmaker, _session(name="a"))
    with pytest.raises(IntegrityError):
        await _add(db_sessionmaker, _session(name="a"))
