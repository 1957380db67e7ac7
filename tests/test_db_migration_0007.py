"""Migration 0007 takes the pairing secrets out of delivery rows that ended before
deliveries were redacted, and leaves everything else as it was."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa

from appliance.db import migrate
from appliance.db.engine import create_db_engine
from tests.fixtures.settings import MakeSettings

BEFORE = "0006_sandbox_owners"


def _state(qr: str | None, code: str | None = None) -> dict[str, object]:
    return {
        "id": "e",
        "type": "session.state",
        "session": "s1",
        "data": {"state": "qr", "qr": qr, "pairingCode": code},
    }


async def test_0007_redacts_ended_pairing_deliveries_and_leaves_the_rest(
    make_settings: MakeSettings, empty_database_url: str
) -> None:
    settings = make_settings(database={"url": empty_database_url})
    assert await migrate.upgrade(settings, BEFORE) == BEFORE
    engine = create_db_engine(settings)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    rows = {
        "delivered-qr": ("delivered", "session.state", _state("2@secret,adv,keys")),
        "dead-code": ("dead", "session.state", _state(None, "ABCD-EFGH")),
        "pending-qr": ("pending", "session.state", _state("2@fresh,adv,keys")),
        "connected": ("delivered", "session.state", _state(None)),
        "message": ("delivered", "message.status", {"type": "message.status", "data": {}}),
    }
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO webhooks (id, url, secret_encrypted, enabled, created_at, "
                    "updated_at) VALUES ('w1', 'https://example.com/h', 'x', true, :at, :at)"
                ),
                {"at": now},
            )
            for delivery_id, (status, event_type, payload) in rows.items():
                await conn.execute(
                    sa.text(
                        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, "
                        "session, event_at, payload, status, attempts, created_at, updated_at) "
                        "VALUES (:id, 'w1', :id, :type, 's1', :at, :payload, :status, 1, :at, :at)"
                    ),
                    {
                        "id": delivery_id,
                        "type": event_type,
                        "at": now,
                        "payload": json.dumps(payload),
                        "status": status,
                    },
                )
        assert await migrate.upgrade(settings) == migrate.head_revision()
        async with engine.connect() as conn:
            found = {
                row.id: row.payload if isinstance(row.payload, dict) else json.loads(row.payload)
                for row in await conn.execute(sa.text("SELECT id, payload FROM webhook_deliveries"))
            }
    finally:
        await engine.dispose()
    assert found["delivered-qr"]["data"] == {"state": "qr", "qr": None, "pairingCode": None}
    assert found["delivered-qr"]["redacted"] is True
    assert found["dead-code"]["data"]["pairingCode"] is None
    assert found["dead-code"]["redacted"] is True
    # Pending rows are the dispatcher's sweep's; rows without a secret stay as they were.
    assert found["pending-qr"] == rows["pending-qr"][2]
    assert found["connected"] == rows["connected"][2]
    assert found["message"] == rows["message"][2]
