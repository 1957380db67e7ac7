"""Pairing deliveries (a session's QR or pairing code) live only as long as the code.

The QR string carries the companion's ADV secret: whoever holds it while it is valid can
complete the pairing. A delivery row keeps its payload for as long as the row lives (the
delivery history), so the secret must leave the row once the delivery is over:

- a pairing delivery gets `MAX_AGE_S` from its enqueue instead of the 24 h retry window
  (WhatsApp rotates the QR every 20-60 s; an old one is useless to the receiver);
- when it is delivered, fails or is dead-lettered, its payload is replaced by
  `redacted(payload)` in the same write that records the outcome;
- a pending one nobody sends (its endpoint disabled, or no dispatcher running) is
  dead-lettered and redacted by `sweep`, which each dispatcher runs every `SWEEP_S`;
- a redacted row that is replayed is dead at once: there is nothing left to send.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.db.models import WebhookDelivery
from appliance.db.types import JSONDocument, utcnow

log = logging.getLogger("appliance.webhooks")

_DELIVERIES = WebhookDelivery.__table__  # type: ignore[attr-defined]

MAX_AGE_S = 60.0
SWEEP_S = 10.0
EVENT_TYPE = "session.state"
# The payload (`data`, camelCase as sent) keys that hold a pairing secret.
SECRET_KEYS = ("qr", "pairingCode")
# Set on the envelope of a redacted payload.
REDACTED = "redacted"
EXPIRED_ERROR = "pairing code expired: not sent, its secret dropped"


def is_pairing(payload: dict[str, Any]) -> bool:
    """A `session.state` envelope that carries (or carried) a QR or a pairing code."""
    if payload.get("type") != EVENT_TYPE:
        return False
    if payload.get(REDACTED):
        return True
    data = payload.get("data")
    return isinstance(data, dict) and any(data.get(k) for k in SECRET_KEYS)


def redacted(payload: dict[str, Any]) -> dict[str, Any]:
    """The envelope without its secrets (state, session and times stay for the history)."""
    data = dict(payload.get("data") or {})
    for key in SECRET_KEYS:
        if key in data:
            data[key] = None
    return {**payload, "data": data, REDACTED: True}


def deadline(created_at: datetime) -> datetime:
    return created_at + timedelta(seconds=MAX_AGE_S)


def expired(payload: dict[str, Any], created_at: datetime, now: datetime) -> bool:
    """Past its life, or already redacted (a replayed one): not worth a post."""
    return bool(payload.get(REDACTED)) or now >= deadline(created_at)


async def sweep(
    reader: async_sessionmaker[AsyncSession], writer: async_sessionmaker[AsyncSession]
) -> int:
    """Dead-letter and redact pending pairing deliveries past their life; returns how many.

    A read first (pending rows are few: the partial pending index), a write only when
    there is something to redact.
    """
    now = utcnow()
    async with reader() as db:
        rows = (
            await db.execute(
                sa.select(_DELIVERIES.c.id, _DELIVERIES.c.payload).where(
                    sa.text("webhook_deliveries.status = 'pending'"),
                    _DELIVERIES.c.event_type == EVENT_TYPE,
                    _DELIVERIES.c.created_at <= now - timedelta(seconds=MAX_AGE_S),
                )
            )
        ).all()
    stale = [
        (r.id, r.payload) for r in rows if isinstance(r.payload, dict) and is_pairing(r.payload)
    ]
    if not stale:
        return 0
    async with writer.begin() as db:
        await db.execute(
            sa.update(_DELIVERIES)
            .where(_DELIVERIES.c.id == sa.bindparam("b_id"), _DELIVERIES.c.status == "pending")
            .values(
                status="dead",
                next_attempt_at=None,
                last_error=EXPIRED_ERROR,
                payload=sa.bindparam("b_payload", type_=JSONDocument),
                updated_at=now,
            ),
            [{"b_id": delivery_id, "b_payload": redacted(p)} for delivery_id, p in stale],
        )
    log.info("webhooks: %d expired pairing delivery(ies) dead-lettered and redacted", len(stale))
    return len(stale)
