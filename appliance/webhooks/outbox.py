"""The outbox: one delivery row per matching endpoint, in the event consumer's transaction.

The event consumer calls `enqueue_deliveries` in the same transaction that marks the
event processed and applies it, so an event is either recorded with all its deliveries
or not at all; the dispatcher sends the rows later, whatever happened to the process.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic.alias_generators import to_camel
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from appliance.contracts import Event
from appliance.db.models import ApiKey, Webhook, WebhookDelivery
from appliance.db.statements import insert_or_ignore
from appliance.db.types import utcnow


def camel_keys(value: Any) -> Any:
    """`model_dump(mode="json")` output with camelCase keys, like the rest of the HTTP API."""
    if isinstance(value, dict):
        return {to_camel(k): camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    return value


def envelope(event: Event) -> dict[str, Any]:
    """What a receiver gets: `{id, type, timestamp, session, data}`; `id` is the webhook-id."""
    return {
        "id": str(event.id),
        "type": event.type,
        "timestamp": event.timestamp.isoformat(),
        "session": event.session,
        "data": camel_keys(event.payload.model_dump(mode="json")),
    }


def matches(webhook: Webhook, event_type: str) -> bool:
    return webhook.event_types is None or event_type in webhook.event_types


async def matching_webhooks(
    db: AsyncSession, event_type: str, *, owner_key_id: str | None, session_id: str | None
) -> list[Webhook]:
    """Enabled endpoints an event goes to.

    The session's own endpoints, the tenant-wide endpoints of its owner key, and the
    admin-wide ones (no session, owned by an admin key or by nobody: created from the
    CLI) which get every event.
    """
    admin_wide = sa.and_(
        col(Webhook.session_id).is_(None),
        sa.or_(col(Webhook.owner_key_id).is_(None), col(ApiKey.role) == "admin"),
    )
    scopes: list[sa.ColumnElement[bool]] = [admin_wide]
    if session_id is not None:
        scopes.append(col(Webhook.session_id) == session_id)
    if owner_key_id is not None:
        scopes.append(
            sa.and_(col(Webhook.session_id).is_(None), col(Webhook.owner_key_id) == owner_key_id)
        )
    stmt = (
        sa.select(Webhook)
        .outerjoin(ApiKey, col(ApiKey.id) == col(Webhook.owner_key_id))
        .where(col(Webhook.enabled).is_(True), sa.or_(*scopes))
    )
    rows = (await db.execute(stmt)).scalars().all()
    return [w for w in rows if matches(w, event_type)]


async def enqueue_deliveries(
    db: AsyncSession, event: Event, *, owner_key_id: str | None, session_id: str | None
) -> int:
    """Insert one pending delivery per matching enabled endpoint; no commit. Returns how many.

    Idempotent: a replayed event hits the (webhook, event) unique constraint and adds nothing.
    """
    hooks = await matching_webhooks(
        db, event.type, owner_key_id=owner_key_id, session_id=session_id
    )
    if not hooks:
        return 0
    body = envelope(event)
    now = utcnow()
    inserted = 0
    for hook in hooks:
        row = WebhookDelivery(
            webhook_id=hook.id,
            event_id=str(event.id),
            event_type=event.type,
            session=event.session,
            event_at=event.timestamp,
            payload=body,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        if await insert_or_ignore(db, row):
            inserted += 1
    return inserted
