"""Pairing secrets leave the delivery rows written before they were redacted.

Since 0006 a QR or pairing-code delivery drops its secret once it is over
(appliance/webhooks/pairing.py). Rows that ended before that change still hold the QR
string, which carries the companion's ADV secret: this replaces their payload with the
redacted one. Pending ones are left to the dispatcher's sweep, which dead-letters and
redacts them once they are past their life. There is no way back: a downgrade keeps the
payloads redacted.

Revision ID: 0007_redact_pairing_deliveries
Revises: 0006_sandbox_owners
Create Date: 2026-12-04
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_redact_pairing_deliveries"
down_revision: str | Sequence[str] | None = "0006_sandbox_owners"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in appliance/webhooks/pairing.py at this revision: a migration keeps its own copy, so a
# later change there cannot change what this revision did.
_SECRET_KEYS = ("qr", "pairingCode")


def _redacted(payload: dict[str, Any]) -> dict[str, Any] | None:
    data = payload.get("data")
    if payload.get("type") != "session.state" or not isinstance(data, dict):
        return None
    if not any(data.get(key) for key in _SECRET_KEYS):
        return None
    data = {**data, **{key: None for key in _SECRET_KEYS if key in data}}
    return {**payload, "data": data, "redacted": True}


def upgrade() -> None:
    bind = op.get_bind()
    deliveries = sa.table(
        "webhook_deliveries",
        sa.column("id", sa.String),
        sa.column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
        sa.column("status", sa.String),
        sa.column("event_type", sa.String),
    )
    rows = bind.execute(
        sa.select(deliveries.c.id, deliveries.c.payload).where(
            deliveries.c.event_type == "session.state", deliveries.c.status != "pending"
        )
    ).all()
    for row in rows:
        payload = row.payload if isinstance(row.payload, dict) else json.loads(row.payload)
        clean = _redacted(payload)
        if clean is not None:
            bind.execute(
                sa.update(deliveries).where(deliveries.c.id == row.id).values(payload=clean)
            )


def downgrade() -> None:
    pass  # the secrets are gone on purpose
