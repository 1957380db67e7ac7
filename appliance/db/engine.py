"""The async engine, its session makers, and the readiness ping.

SQLite discipline (style.md): WAL, `busy_timeout`, `foreign_keys=ON` on every
connection, and `BEGIN IMMEDIATE` for transactions that may write. A deferred
transaction that reads and then writes can hit SQLITE_BUSY on its lock upgrade without
waiting for `busy_timeout` (the waiting would deadlock); taking the write lock at BEGIN
makes concurrent writers queue on `busy_timeout` instead. Read-only work can use
`create_sessionmaker(engine, read_only=True)`, which begins DEFERRED and so does not
queue behind writers in WAL mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from appliance.errors import ConfigError
from appliance.paths import secure_sqlite_files
from appliance.settings import Settings

# Execution option read by the `begin` listener: how a SQLite transaction starts.
SQLITE_BEGIN = "wapp_sqlite_begin"


def json_text(value: Any) -> str:
    # JSON columns are written on every send and event: orjson is several times faster
    # than the json module SQLAlchemy uses by default, and reads back the same.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def parse_database_url(settings: Settings) -> URL:
    """`settings.database_url` parsed; a malformed one is a ConfigError (exit 3)."""
    try:
        return make_url(settings.database_url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(
            f"database.url is not a valid database URL: {exc}", details={"field": "database.url"}
        ) from exc


def create_db_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    """The engine for `settings.database_url`; connects lazily (no I/O here)."""
    url = parse_database_url(settings)
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(
            url,
            pool_size=settings.database.pool_size,
            json_serializer=json_text,
            json_deserializer=orjson.loads,
            **kwargs,
        )
        _sqlite_discipline(engine, busy_timeout_ms=settings.database.sqlite_busy_timeout_ms)
        _sqlite_private_files(engine, url, data_dir=settings.data_dir)
        return engine
    return create_async_engine(
        url,
        pool_size=settings.database.pool_size,
        json_serializer=json_text,
        json_deserializer=orjson.loads,
        # A restarted Postgres must not leave /readyz failing on dead pooled connections.
        pool_pre_ping=True,
        **kwargs,
    )


def _sqlite_private_files(engine: AsyncEngine, url: URL, *, data_dir: Path) -> None:
    """The database file and its -wal/-shm are 0600 (docs/operations.md, file modes).

    Checked before every new pooled connection opens the file (a handful of stat calls):
    a file copied in or restored with wider modes is tightened at the next connection.
    """
    if url.database in (None, "", ":memory:") or url.query.get("uri"):
        return
    database = Path(url.database).absolute()

    @event.listens_for(engine.sync_engine, "do_connect")
    def _before_open(*_: Any) -> None:
        secure_sqlite_files(database, data_dir=data_dir)


def _sqlite_discipline(
    engine: AsyncEngine, *, busy_timeout_ms: int, autocheckpoint: bool = True
) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # The driver must not open transactions itself (its implicit BEGIN is
        # DEFERRED): the `begin` listener below decides how each one starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            # WAL is a property of the file and sticks. Switching needs an exclusive
            # lock and can fail at once (no busy wait) when several first connections
            # race, so `migrate.upgrade` switches it beforehand and this only fixes up
            # a file made some other way.
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            # Safe with WAL: a power cut may lose the last commits, never corrupt.
            cursor.execute("PRAGMA synchronous=NORMAL")
            if not autocheckpoint:
                cursor.execute("PRAGMA wal_autocheckpoint=0")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


def create_writer_engine(settings: Settings, engine: AsyncEngine) -> AsyncEngine:
    """The engine write transactions go through.

    SQLite allows one writer at a time. Writers on several pooled connections contend in
    SQLite's busy handler, which sleeps 1 ms, 2 ms, 5 ms ... up to 100 ms between tries:
    under load nearly all the time goes to those sleeps. One connection for writers makes
    them queue in asyncio instead, where the next one starts the moment the last commits.
    Its commits make no WAL checkpoints: whoever uses it runs `db.checkpoints`.
    Postgres needs nothing of the sort: the shared engine is returned.
    """
    if not is_sqlite(engine):
        return engine
    writer = create_async_engine(
        engine.url,
        pool_size=1,
        max_overflow=0,
        json_serializer=json_text,
        json_deserializer=orjson.loads,
    )
    # A commit past 1,000 WAL pages would otherwise checkpoint (copy the WAL into the
    # database file and fsync it, tens of ms) inside the committing call, and the send
    # batcher commits on the event loop. `db.checkpoints` runs them on a pooled
    # connection's thread instead.
    _sqlite_discipline(
        writer, busy_timeout_ms=settings.database.sqlite_busy_timeout_ms, autocheckpoint=False
    )
    return writer


def reader(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, but SQLite transactions begin DEFERRED (no write lock).

    For work that only reads: it does not queue behind writers, and several can run
    side by side. A write in such a transaction may fail with "database is locked".
    """
    return engine.execution_options(**{SQLITE_BEGIN: "DEFERRED"})


def create_sessionmaker(
    engine: AsyncEngine, *, read_only: bool = False
) -> async_sessionmaker[AsyncSession]:
    """Sessions for services. `read_only=True` skips SQLite's write lock (no effect on Postgres).

    `expire_on_commit=False`: rows stay readable after commit, which async code needs
    (an expired attribute would need I/O on access).
    """
    return async_sessionmaker(reader(engine) if read_only else engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """`SELECT 1`; raises the driver's error when the database cannot answer."""
    # DEFERRED: a readiness probe must not queue behind SQLite writers.
    async with reader(engine).connect() as conn:
        await conn.execute(sa.text("SELECT 1"))
