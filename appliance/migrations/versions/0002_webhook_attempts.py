"""Webhooks: every delivery attempt, and a per-endpoint dispatcher lease.

Revision ID: 0002_webhooks
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_webhooks"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(64), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "webhook_delivery_attempts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("delivery_id", sa.String(36), nullable=False),
        sa.Column("webhook_id", sa.String(36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_delivery_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhooks.id"],
            name=op.f("fk_webhook_delivery_attempts_webhook_id_webhooks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery_attempts")),
    )
    op.create_index(
        "ix_webhook_delivery_attempts_delivery_at",
        "webhook_delivery_attempts",
        ["delivery_id", "at"],
    )
    op.create_index(
        "ix_webhook_delivery_attempts_webhook_at", "webhook_delivery_attempts", ["webhook_id", "at"]
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_delivery_attempts_webhook_at", table_name="webhook_delivery_attempts")
    op.drop_index(
        "ix_webhook_delivery_attempts_delivery_at", table_name="webhook_delivery_attempts"
    )
    op.drop_table("webhook_delivery_attempts")
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("lease_owner")
