"""Alembic environment. `appliance.db.migrate` runs it with an open connection.

Run by hand (for `revision --autogenerate` while developing), it builds the engine from
the usual configuration: `.venv/bin/alembic -c appliance/migrations/alembic.ini ...`.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from appliance.db.models import metadata

config = context.config


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        # SQLite alters tables by copying them; batch mode does that for later migrations.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_from_settings() -> None:
    from appliance.db.engine import create_db_engine
    from appliance.settings import load_settings

    engine = create_db_engine(load_settings())
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run_with)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `wapp db upgrade`")

given = config.attributes.get("connection")
if given is not None:
    run_with(given)
else:
    asyncio.run(run_from_settings())
