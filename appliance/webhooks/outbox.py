"""The outbox: one delivery row per matching endpoint, in the event consumer's transaction.

The event consumer calls `enqueue_deliveries` in the same transaction that marks the
event processed and applies it, so an event is either recorded with all its deliveries
or not at all; the dispatcher sends the rows later, whatever happened to the process.
"""

from __future__ import annotations

from typing import Any, cast

import sqlalchemy as sa
from pydantic.alias_generators import to_camel
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from appliance import ids
from appliance.contracts import Event
from appliance.db.models import ApiKey, Webhook, WebhookDelivery
from appliance.db.types import JSONDocument, UTCDateTime, utcnow

_DELIVERIES = WebhookDelivery.__table__  # type: ignore[attr-defined]


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


def _scopes(owner_key_id: str | None, session_id: str | None) -> sa.ColumnElement[bool]:
    """Which endpoints an event of this session goes to (before the type filter).

    The session's own endpoints, the tenant-wide endpoints of its owner key, and the
    admin-wide ones (no session, owned by an admin key or by nobody: created from the
    CLI), which get every event.
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
    return sa.or_(*scopes)


async def matching_webhooks(
    db: AsyncSession, event_type: str, *, owner_key_id: str | None, session_id: str | None
) -> list[Webhook]:
    """Enabled endpoints an event goes to (what `enqueue_deliveries` inserts for)."""
    stmt = (
        sa.select(Webhook)
        .outerjoin(ApiKey, col(ApiKey.id) == col(Webhook.owner_key_id))
        .where(
            col(Webhook.enabled).is_(True),
            _scopes(owner_key_id, session_id),
        )
    )
    return [w for w in (await db.execute(stmt)).scalars().all() if matches(w, event_type)]


_ENQUEUE = """
INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, session, event_at,
    payload, status, attempts, next_attempt_at, created_at, updated_at)
SELECT {new_id}, w.id, :event_id, CAST(:event_type AS VARCHAR), :session, :event_at,
    :payload, 'pending', 0, :now, :now, :now
FROM webhooks AS w LEFT OUTER JOIN api_keys AS k ON k.id = w.owner_key_id
WHERE w.enabled = :enabled
  AND (
    (w.session_id IS NULL AND (w.owner_key_id IS NULL OR k.role = 'admin'))
    OR (CAST(:session_id AS VARCHAR) IS NOT NULL AND w.session_id = :session_id)
    OR (CAST(:owner AS VARCHAR) IS NOT NULL AND w.session_id IS NULL AND w.owner_key_id = :owner)
  )
  AND (w.event_types IS NULL OR {listed})
ON CONFLICT DO NOTHING
"""
# Row ids are UUID7 (as `ids.uuid7`): the time part comes from Python (`:id_time`,
# "tttttttt-tttt-"), the version and random parts from the database, once per row.
_SQLITE_UUID = (
    ":id_time || lower('7' || substr(hex(randomblob(2)), 2) || '-' "
    "|| substr('89ab', 1 + (abs(random()) % 4), 1) "
    "|| substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))"
)
# gen_random_uuid() is version 4: keep its variant and random digits, set version 7.
_POSTGRES_UUID = ":id_time || '7' || substr(CAST(gen_random_uuid() AS VARCHAR), 16)"


def _enqueue_statement(dialect: str) -> sa.TextClause:
    if dialect == "postgresql":
        sql = _ENQUEUE.format(
            new_id=_POSTGRES_UUID,
            listed="jsonb_exists(w.event_types, CAST(:event_type AS VARCHAR))",
        )
    else:
        sql = _ENQUEUE.format(
            new_id=_SQLITE_UUID,
            listed="EXISTS (SELECT 1 FROM json_each(w.event_types) WHERE value = :event_type)",
        )
    return sa.text(sql).bindparams(
        sa.bindparam("event_at", type_=UTCDateTime),
        sa.bindparam("now", type_=UTCDateTime),
        sa.bindparam("payload", type_=JSONDocument),
        sa.bindparam("enabled", type_=sa.Boolean),
    )


_STATEMENTS = {d: _enqueue_statement(d) for d in ("postgresql", "sqlite")}


async def enqueue_deliveries(
    db: AsyncSession, event: Event, *, owner_key_id: str | None, session_id: str | None
) -> int:
    """Insert one pending delivery per matching enabled endpoint; no commit. Returns how many.

    Matching (scope as in `matching_webhooks`, then the event-type filter) and inserting
    are one INSERT ... SELECT: a single round trip, and a write transaction should await
    as little as possible (on SQLite it holds the database's only write lock meanwhile).
    Idempotent: a replayed event hits the (webhook, event) unique constraint, adds nothing.
    """
    dialect = "postgresql" if db.get_bind().dialect.name == "postgresql" else "sqlite"
    result = cast(
        CursorResult[Any],
        await db.execute(
            _STATEMENTS[dialect],
            {
                "id_time": ids.uuid7_time_prefix(),
                "event_id": str(event.id),
                "event_type": event.type,
                "session": event.session,
                "event_at": event.timestamp,
                "payload": envelope(event),
                "now": utcnow(),
                "enabled": True,
                "session_id": session_id,
                "owner": owner_key_id,
            },
        ),
    )
    return max(0, int(result.rowcount))
