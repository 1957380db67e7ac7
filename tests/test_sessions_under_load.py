"""The api's SQLite connections survive another process closing its own connection.

Seen under load on the real stack: `POST /v1/sessions` and `GET /v1/sessions/{name}`
answered 500, the api log saying `sqlite3.OperationalError: disk I/O error`. The cause:
before each new pooled connection the api secured the database file by opening and
closing it (`paths.secure_sqlite_files`). Closing any descriptor of a file drops every
POSIX lock the process holds on it, so the SHARED locks of the api's live WAL
connections were gone; a `wapp` command (here: `wapp keys bootstrap-admin` right after
`wapp up`) closing its connection then found itself the last one, checkpointed and
deleted the -wal and -shm files under the api. Load only decided whether the pool grew
before or after that command ran.

The other process is a real one (a second Python running sqlite3), as a `wapp` command is.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from appliance.api.app import create_app
from appliance.db.engine import reader
from appliance.paths import DB_FILE_MODE, secure_sqlite_files
from appliance.settings import Settings
from tests.fixtures.api import auth, running_api
from tests.fixtures.settings import database_url_under_test

sqlite_only = pytest.mark.skipif(
    database_url_under_test() is not None, reason="SQLite's WAL files and POSIX locks"
)


def another_process_reads_and_closes(database: Path, table: str) -> None:
    """What any `wapp` command does to the database: connect, read, close."""
    script = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        f"conn.execute('SELECT count(*) FROM {table}').fetchall()\n"
        "conn.close()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(database)], check=True, timeout=60)


def has_wal(database: Path) -> bool:
    return Path(f"{database}-wal").exists()


def test_securing_a_live_database_leaves_its_connections_locks_alone(tmp_path: Path) -> None:
    database = tmp_path / "wapp.db"
    live = sqlite3.connect(database, isolation_level=None)
    try:
        live.execute("PRAGMA journal_mode=WAL")
        live.execute("PRAGMA wal_autocheckpoint=0")  # the row stays in the WAL
        live.execute("CREATE TABLE t (x)")
        live.execute("INSERT INTO t VALUES (1)")
        assert live.execute("SELECT count(*) FROM t").fetchone() == (1,)  # SHARED held
        os.chmod(database, 0o644)

        secure_sqlite_files(database, data_dir=tmp_path / "elsewhere")
        another_process_reads_and_closes(database, "t")

        assert Path(f"{database}-wal").exists(), "the other process deleted our WAL"
        assert Path(f"{database}-shm").exists()
        live.execute("INSERT INTO t VALUES (2)")
        fresh = sqlite3.connect(database)
        try:
            assert fresh.execute("SELECT count(*) FROM t").fetchone() == (2,)
        finally:
            fresh.close()
        # Still what it is for: an existing file's mode tightened.
        assert database.stat().st_mode & 0o777 == DB_FILE_MODE
    finally:
        live.close()


def test_securing_creates_a_missing_database_private(tmp_path: Path) -> None:
    database = tmp_path / "new.db"
    secure_sqlite_files(database, data_dir=tmp_path / "elsewhere")
    assert database.stat().st_size == 0
    assert database.stat().st_mode & 0o777 == DB_FILE_MODE


@asynccontextmanager
async def every_idle_connection_held(db: AsyncEngine) -> AsyncIterator[None]:
    """The api's idle pooled connections checked out, each with its read lock: the next
    query opens a new connection, as a request does when concurrent ones hold the rest."""
    idle = db.sync_engine.pool.checkedin()  # type: ignore[attr-defined]
    async with AsyncExitStack() as held:
        for _ in range(idle):
            # DEFERRED, as the api's reads: several at once, no write lock.
            conn = await held.enter_async_context(reader(db).connect())
            await conn.execute(text("SELECT count(*) FROM sessions"))
        yield


@sqlite_only
async def test_wapp_commands_closing_their_connections_leave_the_api_answering(
    db_settings: Settings, admin_key: str
) -> None:
    app = create_app(db_settings)
    async with running_api(app) as api:
        api.headers.update(auth(admin_key))
        db: AsyncEngine = app.state.wapp.db
        database = Path(str(db.url.database))
        created = await api.post("/v1/sessions", json={"name": "load-1"})
        assert created.status_code == 201, created.text
        async with every_idle_connection_held(db):
            shown = await api.get("/v1/sessions/load-1")  # on a new connection
        assert shown.status_code == 200, shown.text

        another_process_reads_and_closes(database, "sessions")
        assert has_wal(database), "a wapp command deleted the api's WAL"
        again = await api.post("/v1/sessions", json={"name": "load-2"})
        assert again.status_code == 201, again.text
        another_process_reads_and_closes(database, "sessions")
        async with every_idle_connection_held(db):
            shown = await api.get("/v1/sessions/load-2")  # on a new connection
        assert shown.status_code == 200, shown.text
        assert shown.json()["name"] == "load-2"
        listed = await api.get("/v1/sessions")
        assert [s["name"] for s in listed.json()["items"]] == ["load-1", "load-2"]
