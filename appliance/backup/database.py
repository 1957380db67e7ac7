"""The database in a backup: SQLite through its online backup API (a live WAL database
gives one consistent file), Postgres through pg_dump's custom format (one snapshot).
Restore writes a checked copy into place; Postgres restores in one transaction."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from appliance.backup.errors import BackupCorrupt
from appliance.db.engine import create_db_engine
from appliance.errors import CommandFailed
from appliance.paths import DB_FILE_MODE, SQLITE_SIDE_FILES
from appliance.settings import Settings

SQLITE_PREFIX = "sqlite+aiosqlite:///"


def sqlite_path(settings: Settings) -> Path | None:
    url = settings.database_url
    return Path(url[len(SQLITE_PREFIX) :]) if url.startswith(SQLITE_PREFIX) else None


def _pg_url(settings: Settings) -> str:
    # libpq does not know SQLAlchemy's driver suffix.
    return settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise CommandFailed(f"{argv[0]} failed: {done.stderr.strip()}")


def kind(settings: Settings) -> str:
    return "sqlite" if sqlite_path(settings) is not None else "postgres"


def dump(settings: Settings, target: Path) -> None:
    source = sqlite_path(settings)
    if source is None:
        _run(["pg_dump", "--format=custom", "--no-owner", f"--file={target}", _pg_url(settings)])
        return
    if not source.exists():
        raise CommandFailed(f"no database at {source}: nothing to back up")
    with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
        live.backup(copy)
    target.chmod(DB_FILE_MODE)


def check(kind_: str, file: Path) -> None:
    """Refuse a dump that would not load, before anything is touched."""
    if kind_ == "postgres":
        done = subprocess.run(["pg_restore", "--list", str(file)], capture_output=True, text=True)
        if done.returncode != 0:
            raise BackupCorrupt(f"the database dump does not read: {done.stderr.strip()}")
        return
    try:
        with sqlite3.connect(f"file:{file}?mode=ro", uri=True) as db:
            verdict = db.execute("PRAGMA integrity_check").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupCorrupt(f"the database copy does not read: {exc}") from exc
    if verdict is None or verdict[0] != "ok":
        raise BackupCorrupt(f"the database copy fails its integrity check: {verdict}")


def restore(settings: Settings, kind_: str, file: Path) -> None:
    target = sqlite_path(settings)
    if kind_ != kind(settings):
        raise CommandFailed(
            f"the backup holds a {kind_} database, this box is configured for {kind(settings)}"
        )
    if target is None:
        _run(
            [
                *("pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction"),
                *("-d", _pg_url(settings), str(file)),
            ]
        )
        return
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staged = target.with_name(target.name + ".restoring")
    staged.write_bytes(file.read_bytes())
    staged.chmod(DB_FILE_MODE)
    with staged.open("rb") as fh:
        os.fsync(fh.fileno())
    # A WAL left by the database being replaced must not be replayed onto the new one.
    for side in SQLITE_SIDE_FILES:
        Path(f"{target}{side}").unlink(missing_ok=True)
    os.replace(staged, target)


async def sessions_present(settings: Settings) -> bool:
    """True when the database has a session row (a missing database or table: none)."""
    path = sqlite_path(settings)
    if path is not None and not path.exists():
        return False
    engine = create_db_engine(settings)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(sa.text("SELECT count(*) FROM sessions"))
    except DBAPIError as exc:
        # A database never migrated has no sessions; any other failure must stop a restore.
        text = str(exc.orig)
        if "no such table" in text or ("sessions" in text and "does not exist" in text):
            return False
        raise
    finally:
        await engine.dispose()
    return bool(count)
