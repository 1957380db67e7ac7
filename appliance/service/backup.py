"""`wapp service backup|restore`: the database and the managed Redis's AOF, taken with the
stack stopped (install.sh --upgrade takes one first, and restores it when a migration fails).

SQLite is copied with its online backup API (one consistent file, WAL folded in); Postgres
with pg_dump/pg_restore (custom format).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from appliance.errors import CommandFailed
from appliance.paths import DB_FILE_MODE, SQLITE_SIDE_FILES
from appliance.settings import Settings
from appliance.stack.layout import StackLayout
from appliance.stack.rpc import connect

SQLITE_PREFIX = "sqlite+aiosqlite:///"
SQLITE_FILE = "wapp.db"
PG_FILE = "wapp.pgdump"
REDIS_DIR = "redis-appendonlydir"
AOF_DIR = "appendonlydir"


def _stopped(settings: Settings) -> None:
    running = connect(StackLayout.of(settings))
    if running is not None:
        with running:
            pid = running.pid()
        raise CommandFailed(f"the stack is running (supervisord pid {pid}): stop it first")


def _sqlite_path(settings: Settings) -> Path | None:
    url = settings.database_url
    return Path(url[len(SQLITE_PREFIX) :]) if url.startswith(SQLITE_PREFIX) else None


def _pg_url(settings: Settings) -> str:
    # libpq does not know SQLAlchemy's driver suffix.
    return settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise CommandFailed(f"{argv[0]} failed: {result.stderr.strip()}")


def default_destination(settings: Settings) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.data_dir / "backups" / stamp


def backup(settings: Settings, dest: Path) -> list[str]:
    """Copy the database and Redis's AOF into `dest` (0700); the names of what was copied."""
    _stopped(settings)
    dest.mkdir(mode=0o700, parents=True, exist_ok=False)
    taken: list[str] = []
    database = _sqlite_path(settings)
    if database is None:
        _run(["pg_dump", "--format=custom", f"--file={dest / PG_FILE}", _pg_url(settings)])
        taken.append(PG_FILE)
    elif database.exists():
        target = dest / SQLITE_FILE
        with sqlite3.connect(database) as source, sqlite3.connect(target) as copy:
            source.backup(copy)
        target.chmod(DB_FILE_MODE)
        taken.append(SQLITE_FILE)
    aof = settings.redis_socket_path.parent / AOF_DIR
    if settings.redis.managed and aof.is_dir():
        shutil.copytree(aof, dest / REDIS_DIR)
        taken.append(REDIS_DIR)
    (dest / "manifest.json").write_text(json.dumps({"taken": taken}))
    return taken


def restore(settings: Settings, source: Path) -> list[str]:
    """Put back what `backup` took into `source`; the names of what was restored."""
    _stopped(settings)
    taken = json.loads((source / "manifest.json").read_text())["taken"]
    database = _sqlite_path(settings)
    if PG_FILE in taken:
        _run(
            ["pg_restore", "--clean", "--if-exists", "-d", _pg_url(settings), str(source / PG_FILE)]
        )
    if SQLITE_FILE in taken and database is not None:
        for side in SQLITE_SIDE_FILES:
            Path(f"{database}{side}").unlink(missing_ok=True)
        shutil.copyfile(source / SQLITE_FILE, database)
        database.chmod(DB_FILE_MODE)
    if REDIS_DIR in taken:
        aof = settings.redis_socket_path.parent / AOF_DIR
        shutil.rmtree(aof, ignore_errors=True)
        shutil.copytree(source / REDIS_DIR, aof)
    return list(taken)
