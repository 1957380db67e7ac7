from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from appliance.db import migrate
from appliance.db.engine import create_db_engine
from appliance.db.models import metadata
from appliance.settings import Settings
from tests.fixtures.settings import MakeSettings

TABLES = {
    "alembic_version",
    "api_keys",
    "sessions",
    "sandbox_numbers",
    "messages",
    "message_status_events",
    "processed_events",
    "webhooks",
    "webhook_deliveries",
    "webhook_delivery_attempts",
}


async def _table_names(settings: Settings) -> set[str]:
    engine = create_db_engine(settings)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _schema_snapshot(engine: AsyncEngine) -> dict[str, object]:
    def snapshot(conn: Connection) -> dict[str, object]:
        inspector = sa.inspect(conn)
        return {
            name: (
                [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)],
                sorted(i["name"] or "" for i in inspector.get_indexes(name)),
                sorted(u["name"] or "" for u in inspector.get_unique_constraints(name)),
            )
            for name in sorted(inspector.get_table_names())
        }

    async with engine.connect() as conn:
        return await conn.run_sync(snapshot)


async def test_it_migrates_an_empty_database_to_head(
    make_settings: MakeSettings, empty_database_url: str
) -> None:
    settings = make_settings(database={"url": empty_database_url})
    assert await migrate.current(settings) is None

    revision = await migrate.upgrade(settings)

    assert revision == migrate.head_revision() is not None
    assert await migrate.current(settings) == revision
    assert await _table_names(settings) == TABLES


async def test_a_second_upgrade_changes_nothing(
    make_settings: MakeSettings, empty_database_url: str
) -> None:
    settings = make_settings(database={"url": empty_database_url})
    await migrate.upgrade(settings)
    engine = create_db_engine(settings)
    try:
        before = await _schema_snapshot(engine)
        assert await migrate.upgrade(settings) == migrate.head_revision()
        assert await _schema_snapshot(engine) == before
        async with engine.connect() as conn:
            versions = (
                await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            ).all()
        assert [v for (v,) in versions] == [migrate.head_revision()]
    finally:
        await engine.dispose()


async def test_concurrent_upgrades_of_one_database_both_succeed(
    make_settings: MakeSettings, empty_database_url: str
) -> None:
    # `wapp up` and an operator's `wapp db upgrade` may race on a fresh install.
    settings = make_settings(database={"url": empty_database_url})
    results = await asyncio.gather(*(migrate.upgrade(settings) for _ in range(3)))
    assert results == [migrate.head_revision()] * 3
    assert await _table_names(settings) == TABLES


async def test_the_migrated_schema_matches_the_models_exactly(db_engine: AsyncEngine) -> None:
    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with db_engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_asking_for_the_revision_of_a_missing_sqlite_file_does_not_create_it(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    path = tmp_path / "absent" / "wapp.db"
    settings = make_settings(database={"url": f"sqlite+aiosqlite:///{path}"})
    assert await migrate.current(settings) is None
    assert not path.parent.exists()


async def test_the_schema_comparison_does_see_a_difference(db_engine: AsyncEngine) -> None:
    # Guards the test above: a comparison that saw nothing would pass vacuously.
    changed = sa.MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["api_keys"].append_column(sa.Column("extra", sa.Integer()))
    changed.tables["sessions"].c.name.type = sa.String(65)

    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, changed))

    async with db_engine.connect() as conn:
        found = await conn.run_sync(diff)
    assert any(d[0] == "add_column" for d in found if isinstance(d, tuple))
    assert any(d[0][0] == "modify_type" for d in found if isinstance(d, list)), found
