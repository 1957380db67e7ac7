"""Migration 0006 keeps what is there: every session's name becomes its
display name too, and a sandbox phone in use goes to the key of its oldest session."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from appliance.db import migrate
from appliance.db.engine import create_db_engine
from tests.fixtures.settings import MakeSettings

BEFORE = "0005_pending_deliveries"


async def test_0006_fills_display_names_and_sandbox_owners_from_existing_sessions(
    make_settings: MakeSettings, empty_database_url: str
) -> None:
    settings = make_settings(database={"url": empty_database_url})
    assert await migrate.upgrade(settings, BEFORE) == BEFORE
    engine = create_db_engine(settings)
    try:
        now = datetime(2026, 12, 1, tzinfo=UTC)
        later = datetime(2026, 12, 2, tzinfo=UTC)
        async with engine.begin() as conn:
            for key in ("k-old", "k-new"):
                await conn.execute(
                    sa.text(
                        "INSERT INTO api_keys (id, secret_hash, name, role, created_at) "
                        "VALUES (:id, 'h', :id, 'tenant', :at)"
                    ),
                    {"id": key, "at": now},
                )
            rows = [
                ("s1", "first", "k-old", "sandbox", "15550001", now),
                ("s2", "second", "k-new", "sandbox", "15550001", later),
                ("s3", "third", "k-new", "whatsapp", "4915100000", now),
            ]
            for sid, name, owner, upstream, phone, at in rows:
                await conn.execute(
                    sa.text(
                        "INSERT INTO sessions (id, name, owner_key_id, upstream, state, "
                        "state_changed_at, phone, active, created_at, updated_at) VALUES "
                        "(:id, :name, :owner, :upstream, 'created', :at, :phone, false, :at, :at)"
                    ),
                    {
                        "id": sid,
                        "name": name,
                        "owner": owner,
                        "upstream": upstream,
                        "phone": phone,
                        "at": at,
                    },
                )
        assert await migrate.upgrade(settings) == migrate.head_revision()
        async with engine.connect() as conn:
            names = dict(
                (await conn.execute(sa.text("SELECT name, display_name FROM sessions")))
                .tuples()
                .all()
            )
            owners = dict(
                (await conn.execute(sa.text("SELECT phone, owner_key_id FROM sandbox_numbers")))
                .tuples()
                .all()
            )
    finally:
        await engine.dispose()
    assert names == {"first": "first", "second": "second", "third": "third"}
    # Only sandbox phones, each to its oldest session's key.
    assert owners == {"15550001": "k-old"}
