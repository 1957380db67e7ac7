"""Initial schema: keys, sessions, messages and their timeline, event idempotency, webhooks.

Types are spelled out (not imported from appliance.db.types) so that this file keeps
creating the same schema whatever the models later become.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# appliance.db.types.JSONDocument as DDL: JSONB on Postgres, JSON (text) on SQLite.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("max_sessions", sa.Integer(), nullable=True),
        sa.Column("messages_per_day", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('admin', 'tenant')", name=op.f("ck_api_keys_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("stream_id", sa.String(64), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_processed_events")),
    )
    op.create_index(op.f("ix_processed_events_processed_at"), "processed_events", ["processed_at"])

    op.create_table(
        "sessions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner_key_id", sa.String(36), nullable=True),
        sa.Column("upstream", sa.String(32), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("state_reason_code", sa.Integer(), nullable=True),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pacing", JSON, nullable=True),
        sa.Column("me_jid", sa.String(128), nullable=True),
        sa.Column("me_lid", sa.String(128), nullable=True),
        sa.Column("me_push_name", sa.String(128), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("paired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "upstream IN ('whatsapp', 'sandbox')", name=op.f("ck_sessions_upstream")
        ),
        sa.ForeignKeyConstraint(
            ["owner_key_id"],
            ["api_keys.id"],
            name=op.f("fk_sessions_owner_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("name", name=op.f("uq_sessions_name")),
    )
    op.create_index("ix_sessions_active", "sessions", ["active"])
    op.create_index(op.f("ix_sessions_owner_key_id"), "sessions", ["owner_key_id"])

    op.create_table(
        "messages",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("api_key_id", sa.String(36), nullable=True),
        sa.Column("direction", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("chat", sa.String(128), nullable=False),
        sa.Column("sender_pn", sa.String(128), nullable=True),
        sa.Column("sender_lid", sa.String(128), nullable=True),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("wa_id", sa.String(128), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trace_id", sa.String(64), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(128), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("direction IN ('out', 'in')", name=op.f("ck_messages_direction")),
        sa.CheckConstraint(
            "status IN ('queued', 'sending', 'sent', 'delivered', 'read', 'failed', 'received')",
            name=op.f("ck_messages_status"),
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_messages_api_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_messages_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint(
            "api_key_id", "idempotency_key", name=op.f("uq_messages_api_key_id_idempotency_key")
        ),
        sa.UniqueConstraint(
            "session_id", "direction", "wa_id", name=op.f("uq_messages_session_id_direction_wa_id")
        ),
    )
    op.create_index("ix_messages_api_key_created", "messages", ["api_key_id", "created_at"])
    op.create_index("ix_messages_session_created", "messages", ["session_id", "created_at", "id"])
    op.create_index(
        "ix_messages_session_direction_created",
        "messages",
        ["session_id", "direction", "created_at", "id"],
    )
    op.create_index(
        "ix_messages_session_status_created",
        "messages",
        ["session_id", "status", "created_at", "id"],
    )

    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner_key_id", sa.String(36), nullable=True),
        sa.Column("session_id", sa.String(36), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", JSON, nullable=True),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("previous_secret_encrypted", sa.Text(), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_key_id"],
            ["api_keys.id"],
            name=op.f("fk_webhooks_owner_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_webhooks_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )
    op.create_index(op.f("ix_webhooks_owner_key_id"), "webhooks", ["owner_key_id"])
    op.create_index(op.f("ix_webhooks_session_id"), "webhooks", ["session_id"])

    op.create_table(
        "message_status_events",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trace_id", sa.String(64), nullable=True),
        sa.Column("detail", JSON, nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'sending', 'sent', 'delivered', 'read', 'failed')",
            name=op.f("ck_message_status_events_status"),
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_status_events_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_status_events")),
        sa.UniqueConstraint(
            "message_id", "status", name=op.f("uq_message_status_events_message_id_status")
        ),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("webhook_id", sa.String(36), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("session", sa.String(64), nullable=True),
        sa.Column("event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_latency_ms", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed', 'dead')",
            name=op.f("ck_webhook_deliveries_status"),
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhooks.id"],
            name=op.f("fk_webhook_deliveries_webhook_id_webhooks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint(
            "webhook_id", "event_id", name=op.f("uq_webhook_deliveries_webhook_id_event_id")
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_status_next_attempt",
        "webhook_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_index(
        "ix_webhook_deliveries_webhook_session_created",
        "webhook_deliveries",
        ["webhook_id", "session", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_webhook_session_created", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_status_next_attempt", table_name="webhook_deliveries")

    op.drop_table("webhook_deliveries")
    op.drop_table("message_status_events")
    op.drop_index(op.f("ix_webhooks_session_id"), table_name="webhooks")
    op.drop_index(op.f("ix_webhooks_owner_key_id"), table_name="webhooks")

    op.drop_table("webhooks")
    op.drop_index("ix_messages_session_status_created", table_name="messages")
    op.drop_index("ix_messages_session_direction_created", table_name="messages")
    op.drop_index("ix_messages_session_created", table_name="messages")
    op.drop_index("ix_messages_api_key_created", table_name="messages")

    op.drop_table("messages")
    op.drop_index(op.f("ix_sessions_owner_key_id"), table_name="sessions")
    op.drop_index("ix_sessions_active", table_name="sessions")

    op.drop_table("sessions")
    op.drop_index(op.f("ix_processed_events_processed_at"), table_name="processed_events")

    op.drop_table("processed_events")
    op.drop_table("api_keys")
