"""Schema migrations (alembic), configured in code from Settings.

`upgrade` is idempotent and safe to run concurrently: on Postgres an advisory lock
serialises runners, on SQLite the migration's `BEGIN IMMEDIATE` does.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from appliance.db.engine import create_db_engine, parse_database_url, reader
from appliance.errors import ConfigError, ServiceUnavailable
from appliance.paths import MIGRATIONS_DIR, secure_sqlite_files
from appliance.settings import Settings

# Arbitrary, fixed: the key of the Postgres advisory lock held while migrating.
_PG_MIGRATION_LOCK = 0x77617070  # "wapp"

# Postgres SQLSTATE classes that mean the URL is wrong rather than the server down:
# 28 = invalid authorization (user, password), 3D = invalid catalog name (database).
_CONFIG_SQLSTATE_CLASSES = ("28", "3D")


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _safe_url(settings: Settings) -> str:
    return parse_database_url(settings).render_as_string(hide_password=True)


@contextmanager
def database_errors(settings: Settings) -> Iterator[None]:
    """Map failures to reach the database to our errors: a wrong URL is configuration.

    Errors of the SQL itself (a broken migration) are bugs and pass through unchanged.
    """
    try:
        yield
    except (OperationalError, InterfaceError, OSError) as exc:
        raise _classify(settings, exc) from exc
    except Exception as exc:
        # asyncpg raises its own errors, unwrapped, while connecting (wrong database,
        # user or password); they carry a SQLSTATE.
        if getattr(exc, "sqlstate", None) is None:
            raise
        raise _classify(settings, exc) from exc


def _classify(settings: Settings, exc: BaseException) -> ConfigError | ServiceUnavailable:
    error = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    sqlstate = str(getattr(error, "sqlstate", "") or "")
    if isinstance(error, OSError):
        reason = error.strerror or str(error)
    else:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    where = _safe_url(settings)
    if sqlstate[:2] in _CONFIG_SQLSTATE_CLASSES or "unable to open database file" in reason:
        return ConfigError(
            f"database.url: cannot use {where}: {reason}", details={"field": "database.url"}
        )
    return ServiceUnavailable(f"database {where} is unavailable: {reason}")


def _sqlite_path(settings: Settings) -> Path | None:
    url = parse_database_url(settings)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


async def upgrade(settings: Settings, revision: str = "head") -> str | None:
    """Migrate the database to `revision`; returns the revision it is at afterwards."""
    sqlite_file = _sqlite_path(settings)
    if sqlite_file is not None:
        try:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"database.url: cannot create {sqlite_file.parent}: {exc.strerror}",
                details={"field": "database.url"},
            ) from exc
        # Private before sqlite3 creates it with the umask's mode (and its WAL with it).
        secure_sqlite_files(sqlite_file.absolute(), data_dir=settings.data_dir)
        await asyncio.to_thread(
            _switch_to_wal, sqlite_file, settings.database.sqlite_busy_timeout_ms / 1000
        )
    engine = create_db_engine(settings)
    try:
        with database_errors(settings):
            async with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    await conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                    )
                await conn.run_sync(_upgrade, revision)
            return await _current(engine)
    finally:
        await engine.dispose()


def _switch_to_wal(path: Path, timeout_s: float) -> None:
    """Put the SQLite file in WAL mode before anything else connects to it.

    The switch fails at once, without waiting on busy_timeout, while another connection
    is switching too (two `wapp db upgrade` on a fresh install); retrying resolves it.
    """
    deadline = time.monotonic() + max(timeout_s, 1.0)
    while True:
        try:
            conn = sqlite3.connect(path, timeout=timeout_s)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            finally:
                conn.close()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise ConfigError(
                    f"database.url: cannot use {path}: {exc}", details={"field": "database.url"}
                ) from exc
            time.sleep(0.01)


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


async def current(settings: Settings) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    sqlite_file = _sqlite_path(settings)
    if sqlite_file is not None and not sqlite_file.exists():
        # Connecting would create an empty file: asking must not change anything.
        return None
    engine = create_db_engine(settings)
    try:
        with database_errors(settings):
            return await _current(engine)
    finally:
        await engine.dispose()


async def _current(engine: AsyncEngine) -> str | None:
    async with reader(engine).connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )
