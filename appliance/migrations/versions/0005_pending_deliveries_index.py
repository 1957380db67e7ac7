"""The dispatcher's reads go through a partial index of pending deliveries only.

`(status, next_attempt_at)` made every endpoint's "what is due" read range over the due
rows of all endpoints and sort them: under a backlog each round cost more than the
last. The partial index holds only pending rows, per endpoint, in the order they are
sent, with the columns the reads filter on: it stays as small as the backlog, and a
delivered row leaves it.

Revision ID: 0005_pending_deliveries
Revises: 0004_messages_index
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_pending_deliveries"
down_revision: str | Sequence[str] | None = "0004_messages_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.drop_index("ix_webhook_deliveries_status_next_attempt", table_name="webhook_deliveries")
    op.create_index(
        "ix_webhook_deliveries_pending",
        "webhook_deliveries",
        ["webhook_id", "created_at", "id", "next_attempt_at", "session"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_pending", table_name="webhook_deliveries")
    op.create_index(
        "ix_webhook_deliveries_status_next_attempt",
        "webhook_deliveries",
        ["status", "next_attempt_at"],
    )
