"""Drop `ix_messages_api_key_created`: no query reads it (the daily quota counts in Redis),
and every accepted message paid for one more index insert.

Revision ID: 0004_messages_index
Revises: 0003_sessions
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004_messages_index"
down_revision: str | Sequence[str] | None = "0003_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_messages_api_key_created", table_name="messages")


def downgrade() -> None:
    op.create_index("ix_messages_api_key_created", "messages", ["api_key_id", "created_at"])
