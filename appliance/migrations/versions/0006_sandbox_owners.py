"""Sandbox numbers belong to a key, and session names are per key.

`sandbox_numbers`: a simulated number (a sandbox session's phone or a simulated
contact) and the key that first used it; other tenants get 404 for it. Numbers already
used by sandbox sessions go to the key of the oldest such session.

`sessions.display_name`: the name the owner gave, unique per owner key. `sessions.name`
stays the box-wide engine name (Redis keys, the engine); it equals `display_name` unless
another key's session had that name already (docs/sessions.md).

Revision ID: 0006_sandbox_owners
Revises: 0005_pending_deliveries
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_sandbox_owners"
down_revision: str | Sequence[str] | None = "0005_pending_deliveries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sandbox_numbers",
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("owner_key_id", sa.String(36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_key_id"],
            ["api_keys.id"],
            name=op.f("fk_sandbox_numbers_owner_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("phone", name=op.f("pk_sandbox_numbers")),
    )
    op.create_index(op.f("ix_sandbox_numbers_owner_key_id"), "sandbox_numbers", ["owner_key_id"])
    op.execute(
        """
        INSERT INTO sandbox_numbers (phone, owner_key_id, created_at)
        SELECT s.phone, s.owner_key_id, s.created_at FROM sessions s
        WHERE s.upstream = 'sandbox' AND s.phone IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM sessions o
            WHERE o.upstream = 'sandbox' AND o.phone = s.phone
              AND (o.created_at < s.created_at OR (o.created_at = s.created_at AND o.id < s.id))
        )
        """
    )
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("display_name", sa.String(64), nullable=True))
    op.execute("UPDATE sessions SET display_name = name")
    with op.batch_alter_table("sessions") as batch:
        batch.alter_column("display_name", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint(
            op.f("uq_sessions_owner_key_id_display_name"), ["owner_key_id", "display_name"]
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint(op.f("uq_sessions_owner_key_id_display_name"), type_="unique")
        batch.drop_column("display_name")
    op.drop_index(op.f("ix_sandbox_numbers_owner_key_id"), table_name="sandbox_numbers")
    op.drop_table("sandbox_numbers")
