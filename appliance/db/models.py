"""The system of record: SQLModel tables. Only the api side (Python) touches them.

Every table has a string UUID primary key, aware UTC datetimes and portable JSON
(see `types.py`). `migrations/versions/` must match these exactly; a test compares the
migrated schema with this metadata on SQLite and on Postgres.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from appliance.contracts import MessageStatus, SessionState, Upstream
from appliance.db.types import Code, Id, JSONDocument, UTCDateTime, new_id, utcnow

ApiKeyRole = Literal["admin", "tenant"]
Direction = Literal["out", "in"]
# Outbound rows walk MessageStatus; an inbound row is `received` and stays so.
StoredMessageStatus = MessageStatus | Literal["received"]
DeliveryStatus = Literal["pending", "delivered", "failed", "dead"]

# Explicit constraint names, so migrations can refer to them on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Table(SQLModel, registry=registry(metadata=metadata)):
    """Base of every table: our own metadata, not SQLModel's process-wide default."""


def _in(column: str, values: tuple[str, ...], name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=name)


def _created() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


def _updated() -> Any:
    return Field(
        default_factory=utcnow,
        sa_type=UTCDateTime,
        nullable=False,
        sa_column_kwargs={"onupdate": utcnow},
    )


class ApiKey(Table, table=True):
    """`wapp_<id>_<secret>`: the id is this row's key, the secret is only ever hashed."""

    __tablename__ = "api_keys"
    __table_args__ = (_in("role", ("admin", "tenant"), "role"),)

    id: str = Field(default_factory=new_id, primary_key=True, sa_type=Id)
    secret_hash: str = Field(max_length=128)
    name: str = Field(max_length=128)
    role: ApiKeyRole = Field(sa_type=Code)
    # None: unlimited.
    max_sessions: int | None = Field(default=None)
    messages_per_day: int | None = Field(default=None)
    created_at: datetime = _created()
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Session(Table, table=True):
    """One WhatsApp number. `active` says whether the engine should run it after a start."""

    __tablename__ = "sessions"
    __table_args__ = (
        _in("upstream", ("whatsapp", "sandbox"), "upstream"),
        sa.Index("ix_sessions_active", "active"),
        # Names are per key: another tenant's session of the same name is no conflict.
        sa.UniqueConstraint("owner_key_id", "display_name"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, sa_type=Id)
    # The engine name, unique on the box: Redis keys (`wapp:cmd:{name}`), the engine,
    # events. Equal to `display_name` unless another key's session had that name first.
    name: str = Field(max_length=64, unique=True)
    # The name its owner gave and uses in the API (docs/sessions.md, names). Unset when
    # written: the engine name (`_default_display_name`).
    display_name: str | None = Field(default=None, max_length=64, nullable=False)
    owner_key_id: str | None = Field(
        default=None, foreign_key="api_keys.id", ondelete="SET NULL", index=True, sa_type=Id
    )
    upstream: Upstream = Field(sa_type=Code)
    state: SessionState = Field(default="created", sa_type=Code)
    state_reason: str | None = Field(default=None, sa_type=sa.Text)
    state_reason_code: int | None = None
    # Time of the engine event that set `state`: older events arriving late are ignored.
    state_changed_at: datetime = _created()
    pacing: dict[str, Any] | None = Field(default=None, sa_type=JSONDocument)
    # As asked at creation: the number to pair by code (in the sandbox, the simulated
    # phone that scans the QR) and the push name; every later start sends them again.
    phone: str | None = Field(default=None, max_length=32)
    push_name: str | None = Field(default=None, max_length=64)
    me_jid: str | None = Field(default=None, max_length=128)
    me_lid: str | None = Field(default=None, max_length=128)
    me_push_name: str | None = Field(default=None, max_length=128)
    active: bool = Field(default=False)
    paired_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = _created()
    updated_at: datetime = _updated()

    @property
    def public_name(self) -> str:
        """The name its owner sees."""
        return self.display_name or self.name


@sa.event.listens_for(Session, "before_insert")
def _default_display_name(_mapper: Any, _connection: Any, row: Session) -> None:
    if row.display_name is None:
        row.display_name = row.name


class SandboxNumber(Table, table=True):
    """A simulated number (sandbox session phone or contact) and the key that made it."""

    __tablename__ = "sandbox_numbers"

    phone: str = Field(primary_key=True, max_length=32)
    owner_key_id: str | None = Field(
        default=None, foreign_key="api_keys.id", ondelete="SET NULL", index=True, sa_type=Id
    )
    created_at: datetime = _created()


class Message(Table, table=True):
    """An outbound message (`out`, walks the status lifecycle) or an inbound one (`in`)."""

    __tablename__ = "messages"
    __table_args__ = (
        _in("direction", ("out", "in"), "direction"),
        _in(
            "status",
            ("queued", "sending", "sent", "delivered", "read", "failed", "received"),
            "status",
        ),
        # Idempotency-Key is scoped per api key; NULL keys never collide.
        sa.UniqueConstraint("api_key_id", "idempotency_key"),
        # Replaying an inbound event cannot store the message twice.
        sa.UniqueConstraint("session_id", "direction", "wa_id"),
        # Listing: newest first within a session, optionally by direction or status;
        # the cursor is (created_at, id).
        sa.Index("ix_messages_session_created", "session_id", "created_at", "id"),
        sa.Index(
            "ix_messages_session_direction_created", "session_id", "direction", "created_at", "id"
        ),
        sa.Index("ix_messages_session_status_created", "session_id", "status", "created_at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, sa_type=Id)
    session_id: str = Field(foreign_key="sessions.id", ondelete="CASCADE", sa_type=Id)
    api_key_id: str | None = Field(
        default=None, foreign_key="api_keys.id", ondelete="SET NULL", sa_type=Id
    )
    direction: Direction = Field(sa_type=Code)
    kind: str = Field(sa_type=Code)
    # Outbound: the recipient as given (number or JID). Inbound: the chat JID.
    chat: str = Field(max_length=128)
    sender_pn: str | None = Field(default=None, max_length=128)
    sender_lid: str | None = Field(default=None, max_length=128)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONDocument, nullable=False)
    status: StoredMessageStatus = Field(sa_type=Code)
    wa_id: str | None = Field(default=None, max_length=128)
    # Inbound: the sender's timestamp; outbound: when the server acked the send.
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    trace_id: str | None = Field(default=None, max_length=64)
    idempotency_key: str | None = Field(default=None, max_length=255)
    # Hash of the request body: the same key with a different body is refused.
    request_hash: str | None = Field(default=None, max_length=128)
    error_code: str | None = Field(default=None, max_length=64)
    error_reason: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _created()
    updated_at: datetime = _updated()


class MessageStatusEvent(Table, table=True):
    """The status timeline of a message. One row per status, so a replayed event is a no-op."""

    __tablename__ = "message_status_events"
    __table_args__ = (
        sa.UniqueConstraint("message_id", "status"),
        _in("status", ("queued", "sending", "sent", "delivered", "read", "failed"), "status"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, sa_type=Id)
    message_id: str = Field(foreign_key="messages.id", ondelete="CASCADE", sa_type=Id)
    status: MessageStatus = Field(sa_type=Code)
    at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    trace_id: str | None = Field(default=None, max_length=64)
    detail: dict[str, Any] | None = Field(default=None, sa_type=JSONDocument)


class ProcessedEvent(Table, table=True):
    """Envelope ids the api's event consumer has committed: the consumer's idempotency."""

    __tablename__ = "processed_events"

    event_id: str = Field(primary_key=True, sa_type=Id)
    event_type: str = Field(max_length=64)
    # The Redis stream entry id, for tracing a row back to `wapp:events`.
    stream_id: str | None = Field(default=None, max_length=64)
    processed_at: datetime = Field(
        default_factory=utcnow, sa_type=UTCDateTime, nullable=False, index=True
    )


class Webhook(Table, table=True):
    """An endpoint of a tenant (all its sessions) or of one session.

    Secrets are stored encrypted with the master key; after a rotation the previous
    secret keeps signing until `previous_secret_expires_at`.
    """

    __tablename__ = "webhooks"

    id: str = Field(default_factory=new_id, primary_key=True, sa_type=Id)
    owner_key_id: str | None = Field(
        default=None, foreign_key="api_keys.id", ondelete="CASCADE", index=True, sa_type=Id
    )
    session_id: str | None = Field(
        default=None, foreign_key="sessions.id", ondelete="CASCADE", index=True, sa_type=Id
    )
    url: str = Field(sa_type=sa.Text)
    # None: every event type.
    event_types: list[str] | None = Field(default=None, sa_type=JSONDocument)
    secret_encrypted: str = Field(sa_type=sa.Text)
    previous_secret_encrypted: str | None = Field(default=None, sa_type=sa.Text)
    previous_secret_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    enabled: bool = Field(default=True)
    disabled_reason: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _created()
    updated_at: datetime = _updated()
    # The dispatcher that sends this endpoint's deliveries until `lease_until` (one at a
    # time across api workers: per-endpoint order and concurrency hold globally).
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebhookDelivery(Table, table=True):
    """The outbox: one row per (endpoint, event), written with the event's own commit."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        _in("status", ("pending", "delivered", "failed", "dead"), "status"),
        # A replayed event stream cannot enqueue an event twice; a replay resets the row.
        sa.UniqueConstraint("webhook_id", "event_id"),
        # The dispatcher's reads: pending rows only, per endpoint in sending order (a
        # delivered row leaves the index). Queries must say `status = 'pending'` as a
        # literal (`dispatcher.PENDING`) for the planners to use it.
        sa.Index(
            "ix_webhook_deliveries_pending",
            "webhook_id",
            "created_at",
            "id",
            "next_attempt_at",
            "session",
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        ),
        # Listing per endpoint, and in-order delivery per (endpoint, session).
        sa.Index(
            "ix_webhook_deliveries_webhook_session_created", "webhook_id", "session", "created_at"
        ),
    )

    id: str = Field(default_factory=new_id, primary_key=True, sa_type=Id)
    webhook_id: str = Field(foreign_key="webhooks.id", ondelete="CASCADE", sa_type=Id)
    # The stable `webhook-id` header: the same across retries and replays.
    event_id: str = Field(sa_type=Id)
    event_type: str = Field(max_length=64)
    # The session name as in the event; no FK so history outlives a deleted session.
    session: str | None = Field(default=None, max_length=64)
    event_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONDocument, nullable=False)
    status: DeliveryStatus = Field(default="pending", sa_type=Code)
    attempts: int = Field(default=0)
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    last_latency_ms: int | None = None
    created_at: datetime = _created()
    updated_at: datetime = _updated()
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebhookDeliveryAttempt(Table, table=True):
    """One try of a delivery: what `GET /v1/webhooks/{id}/deliveries` lists."""

    __tablename__ = "webhook_delivery_attempts"
    __table_args__ = (
        sa.Index("ix_webhook_delivery_attempts_delivery_at", "delivery_id", "at"),
        sa.Index("ix_webhook_delivery_attempts_webhook_at", "webhook_id", "at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, sa_type=Id)
    delivery_id: str = Field(foreign_key="webhook_deliveries.id", ondelete="CASCADE", sa_type=Id)
    webhook_id: str = Field(foreign_key="webhooks.id", ondelete="CASCADE", sa_type=Id)
    attempt: int
    at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    status_code: int | None = None
    latency_ms: int | None = None
    error: str | None = Field(default=None, sa_type=sa.Text)


ALL_TABLES = (
    ApiKey,
    Session,
    SandboxNumber,
    Message,
    MessageStatusEvent,
    ProcessedEvent,
    Webhook,
    WebhookDelivery,
    WebhookDeliveryAttempt,
)
