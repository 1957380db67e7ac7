"""WhatsApp may hand a message over again (an offline queue redelivered after a dying
socket): the api stores it once and fans it out to webhooks once."""

from __future__ import annotations

from datetime import UTC, datetime

import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.contracts import MessageReceivedEvent, MessageReceivedPayload
from appliance.db.models import Message, Session, Webhook, WebhookDelivery
from appliance.events.consumer import EventConsumer
from appliance.redis_keys import EVENTS_STREAM

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def received(wa_id: str) -> MessageReceivedEvent:
    return MessageReceivedEvent(
        session="in-1",
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


async def test_a_redelivered_inbound_message_is_stored_and_sent_to_webhooks_once(
    redis: aioredis.Redis, db_sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    row = Session(name="in-1", upstream="sandbox", state="connected")
    async with db_sessionmaker() as db, db.begin():
        db.add(row)
        await db.flush()
        db.add(Webhook(session_id=row.id, url="https://example.test/h", secret_encrypted="x"))
    consumer = EventConsumer(redis=redis, writer=db_sessionmaker, block_ms=100, claim_idle_ms=0)
    await consumer.ensure_group()
    # Two events (two event ids) for one WhatsApp message, and one for another.
    for event in (received("WA-SAME"), received("WA-SAME"), received("WA-OTHER")):
        await redis.xadd(EVENTS_STREAM, {"data": event.model_dump_json()})
    while await consumer.read_once(block_ms=50):
        pass
    async with db_sessionmaker() as db:
        inbound = (
            await db.scalars(sa.select(Message.wa_id).where(Message.direction == "in"))
        ).all()
        deliveries = await db.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery))
    assert sorted(inbound) == ["WA-OTHER", "WA-SAME"]
    assert deliveries == 2
