"""SQLite WAL checkpoints: none made by the writer's commits, all by `WalCheckpoints`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from appliance.db.checkpoints import WalCheckpoints, checkpoint
from appliance.db.engine import create_writer_engine
from appliance.settings import Settings


@pytest.fixture
def sqlite_file(database_url: str) -> Path:
    if not database_url.startswith("sqlite"):
        pytest.skip("WAL checkpoints are SQLite's; Postgres checkpoints on its own")
    return Path(sa.engine.make_url(database_url).database or "")


def _size(path: Path) -> int:
    return path.stat().st_size


async def _write_pages(writer: AsyncEngine, megabytes: int) -> None:
    # Well past the 1,000 pages (4 MB) at which a commit would checkpoint by default.
    async with writer.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE filler (blob BLOB)")
    for _ in range(megabytes):
        async with writer.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO filler VALUES (?)", [(b"x" * 4000,) for _ in range(256)]
            )


async def test_the_writer_leaves_checkpoints_to_the_checkpointer(
    sqlite_file: Path, db_settings: Settings, db_engine: AsyncEngine
) -> None:
    writer = create_writer_engine(db_settings, db_engine)
    try:
        async with writer.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar() == 0
        size_before = _size(sqlite_file)
        await _write_pages(writer, megabytes=8)
        wal = sqlite_file.with_name(sqlite_file.name + "-wal")
        assert _size(wal) > 8_000_000
        assert _size(sqlite_file) == size_before  # nothing copied in yet

        checkpoints = WalCheckpoints(db_engine, interval_s=0.05)
        checkpoints.start()
        try:
            for _ in range(200):
                if _size(sqlite_file) > size_before + 8_000_000:
                    break
                await asyncio.sleep(0.05)
        finally:
            await checkpoints.stop()
        assert _size(sqlite_file) > size_before + 8_000_000
        done = await checkpoint(db_engine)
        assert not done.busy
        assert done.wal_frames == done.checkpointed_frames
    finally:
        await writer.dispose()
