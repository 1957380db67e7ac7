"""`wapp service backup|restore`: the database and the managed Redis's AOF, taken with the
stack stopped (install.sh --upgrade takes one first, and restores it when a migration fails).

The database goes through the same code as `wapp backup` (appliance/backup/database.py):
SQLite's online backup API, Postgres' pg_dump/pg_restore in custom format.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from appliance.backup import database
from appliance.errors import CommandFailed
from appliance.settings import Settings
from appliance.stack.layout import StackLayout
from appliance.stack.rpc import connect

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


def default_destination(settings: Settings) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.data_dir / "backups" / stamp


def backup(settings: Settings, dest: Path) -> list[str]:
    """Copy the database and Redis's AOF into `dest` (0700); the names of what was copied."""
    _stopped(settings)
    dest.mkdir(mode=0o700, parents=True, exist_ok=False)
    taken: list[str] = []
    sqlite = database.sqlite_path(settings)
    if sqlite is None or sqlite.exists():
        name = SQLITE_FILE if sqlite is not None else PG_FILE
        database.dump(settings, dest / name)
        taken.append(name)
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
    if PG_FILE in taken:
        database.restore(settings, "postgres", source / PG_FILE)
    if SQLITE_FILE in taken:
        database.restore(settings, "sqlite", source / SQLITE_FILE)
    if REDIS_DIR in taken:
        aof = settings.redis_socket_path.parent / AOF_DIR
        shutil.rmtree(aof, ignore_errors=True)
        shutil.copytree(source / REDIS_DIR, aof)
    return list(taken)
