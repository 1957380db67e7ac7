"""Recording what the dispatcher's tries gave: one short write transaction per batch.

The batch holds outcomes of several endpoints. An endpoint can be deleted (by a user,
or with its session or key, by cascade) while its posts are in flight: its rows are gone
by the time they are recorded. Such outcomes are dropped here, before any write, so one
vanished endpoint never fails the transaction that carries the other endpoints' outcomes
(which would lose them, and have them sent again).

Races with a delete are closed by locks, not by luck: the batch first takes a share lock
on each of its endpoints' rows (Postgres `FOR KEY SHARE`, in id order), and a delete
locks its endpoint row before touching anything else (`service.delete_webhook`). Either
the delete waits until this batch commits (its cascade then removes what was recorded),
or this batch waits for the delete and no longer sees the endpoint. On SQLite the
writer's `BEGIN IMMEDIATE` serialises the two transactions anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.db.models import Webhook, WebhookDelivery, WebhookDeliveryAttempt
from appliance.db.types import JSONDocument, new_id, utcnow

log = logging.getLogger("appliance.webhooks")

_DELIVERIES = WebhookDelivery.__table__  # type: ignore[attr-defined]
_WEBHOOKS = Webhook.__table__  # type: ignore[attr-defined]
_ATTEMPTS = WebhookDeliveryAttempt.__table__  # type: ignore[attr-defined]


@dataclass
class Outcome:
    """What one try gave, and what it means for the row and the endpoint."""

    delivery_id: str
    attempt: int
    at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    # delivered | retry | failed | dead
    verdict: str
    next_attempt_at: datetime | None = None
    disable_endpoint: str | None = None
    # Set when the row's payload must be replaced as it is recorded (a pairing QR's
    # secret, dropped once the delivery is over: `pairing.redacted`).
    replace_payload: dict[str, Any] | None = None


_UPDATE = (
    sa.update(_DELIVERIES)
    .where(_DELIVERIES.c.id == sa.bindparam("b_id"), _DELIVERIES.c.status == "pending")
    .values(
        status=sa.bindparam("b_status"),
        attempts=sa.bindparam("b_attempts"),
        next_attempt_at=sa.bindparam("b_next"),
        last_status_code=sa.bindparam("b_code"),
        last_error=sa.bindparam("b_error"),
        last_latency_ms=sa.bindparam("b_latency"),
        delivered_at=sa.bindparam("b_delivered"),
        updated_at=sa.bindparam("b_now"),
    )
)
# Only for the few rows that need it: rewriting every row's JSON would cost every delivery.
_REPLACE_PAYLOAD = (
    sa.update(_DELIVERIES)
    .where(_DELIVERIES.c.id == sa.bindparam("b_id"))
    .values(payload=sa.bindparam("b_payload", type_=JSONDocument))
)


async def live_endpoints(db: AsyncSession, webhook_ids: Sequence[str]) -> set[str]:
    """Which of these endpoints still exist, share-locked until the transaction ends."""
    if not webhook_ids:
        return set()
    rows = await db.execute(
        sa.select(_WEBHOOKS.c.id)
        .where(_WEBHOOKS.c.id.in_(sorted(set(webhook_ids))))
        .order_by(_WEBHOOKS.c.id)
        # Postgres only (SQLite renders nothing here). KEY SHARE is what inserting a row
        # that references the endpoint takes anyway; it blocks a DELETE, not a lease renewal.
        .with_for_update(read=True, key_share=True)
    )
    return {str(r) for r in rows.scalars().all()}


async def record(
    writer: async_sessionmaker[AsyncSession], batch: Sequence[tuple[str, Sequence[Outcome]]]
) -> int:
    """Every outcome of endpoints that still exist, and its attempt, in one transaction.

    Returns how many outcomes were dropped because their endpoint is gone.
    """
    now = utcnow()
    pairs = [(webhook_id, o) for webhook_id, outcomes in batch for o in outcomes]
    if not pairs:
        return 0
    async with writer.begin() as db:
        live = await live_endpoints(db, [hook_id for hook_id, _ in pairs])
        kept = [(hook_id, o) for hook_id, o in pairs if hook_id in live]
        dropped = len(pairs) - len(kept)
        if dropped:
            log.info("webhooks: %d outcome(s) of deleted endpoints dropped", dropped)
        if not kept:
            return dropped
        await db.execute(_UPDATE, [_update_params(o, now) for _, o in kept])
        await db.execute(
            sa.insert(_ATTEMPTS),
            [
                {
                    "id": new_id(),
                    "delivery_id": o.delivery_id,
                    "webhook_id": hook_id,
                    "attempt": o.attempt,
                    "at": o.at,
                    "status_code": o.status_code,
                    "latency_ms": o.latency_ms,
                    "error": o.error,
                }
                for hook_id, o in kept
            ],
        )
        replaced = [
            {"b_id": o.delivery_id, "b_payload": o.replace_payload}
            for _, o in kept
            if o.replace_payload is not None
        ]
        if replaced:
            await db.execute(_REPLACE_PAYLOAD, replaced)
        disable = {hook_id: o.disable_endpoint for hook_id, o in kept if o.disable_endpoint}
        for hook_id, reason in disable.items():
            await db.execute(
                sa.update(_WEBHOOKS)
                .where(_WEBHOOKS.c.id == hook_id)
                .values(enabled=False, disabled_reason=reason, updated_at=now)
            )
            log.warning("webhook %s disabled: %s", hook_id, reason)
    return dropped


def _update_params(o: Outcome, now: datetime) -> dict[str, Any]:
    return {
        "b_id": o.delivery_id,
        "b_status": "pending" if o.verdict == "retry" else o.verdict,
        "b_attempts": o.attempt,
        "b_next": o.next_attempt_at,
        "b_code": o.status_code,
        "b_error": o.error,
        "b_latency": o.latency_ms,
        "b_delivered": o.at if o.verdict == "delivered" else None,
        "b_now": now,
    }
