"""The send batcher's SQLite connection: jobs in one transaction, locks waited for off the loop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from pathlib import Path

import pytest

from appliance.db.sqlite_writer import SqliteWriter


@pytest.fixture
def database(tmp_path: Path) -> str:
    path = str(tmp_path / "w.db")
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (v INTEGER UNIQUE)")
    return path


@pytest.fixture
async def writer(database: str) -> AsyncIterator[SqliteWriter]:
    w = SqliteWriter(database, busy_timeout_ms=5000)
    yield w
    w.close()


def _insert(v: int) -> Callable[[sqlite3.Connection], object]:
    return lambda conn: conn.execute("INSERT INTO t VALUES (?)", (v,))


def _values(database: str) -> list[int]:
    with closing(sqlite3.connect(database)) as conn:
        return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")]


def _lock(database: str) -> sqlite3.Connection:
    other = sqlite3.connect(database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_a_job_commits_and_a_failing_job_leaves_nothing(
    writer: SqliteWriter, database: str
) -> None:
    await writer.write(_insert(1))

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (2)")
        conn.execute("INSERT INTO t VALUES (1)")  # taken

    with pytest.raises(sqlite3.IntegrityError):
        await writer.write(half_then_fail)
    await writer.write(_insert(3))
    assert _values(database) == [1, 3]


async def test_the_connection_follows_the_discipline(writer: SqliteWriter) -> None:
    def pragmas(conn: sqlite3.Connection) -> list[object]:
        return [
            conn.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("journal_mode", "foreign_keys", "synchronous", "wal_autocheckpoint")
        ] + [conn.execute("PRAGMA busy_timeout").fetchone()[0]]

    assert await writer.write(pragmas) == ["wal", 1, 1, 0, 5000]


async def test_a_lock_held_elsewhere_is_waited_for_off_the_loop(
    writer: SqliteWriter, database: str
) -> None:
    other = _lock(database)
    try:
        write = asyncio.create_task(writer.write(_insert(1)))
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(10):
            await asyncio.sleep(0.01)
        assert loop.time() - started < 1.0  # the loop ran on while the write waited
        assert not write.done()
    finally:
        other.execute("COMMIT")
        other.close()
    await asyncio.wait_for(write, 10)
    assert _values(database) == [1]


async def test_a_lock_held_past_busy_timeout_fails_that_write_only(database: str) -> None:
    writer = SqliteWriter(database, busy_timeout_ms=100)
    try:
        other = _lock(database)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await writer.write(_insert(1))
        finally:
            other.execute("COMMIT")
            other.close()
        await writer.write(_insert(2))
    finally:
        writer.close()
    assert _values(database) == [2]


async def test_a_cancelled_waiting_write_keeps_the_connection_until_it_ends(
    writer: SqliteWriter, database: str
) -> None:
    """Its job still runs on a thread: the next write must wait for it, not share the
    connection with it."""
    other = _lock(database)
    first = asyncio.create_task(writer.write(_insert(1)))
    await asyncio.sleep(0.05)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    second = asyncio.create_task(writer.write(_insert(2)))
    await asyncio.sleep(0.05)
    assert not second.done()
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(second, 10)
    assert _values(database) == [1, 2]
