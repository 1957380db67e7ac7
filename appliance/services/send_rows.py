"""A batch of sends' rows (`messages` and their `queued` timeline rows) written at once.

The send batcher's hot path. Both writers go below SQLAlchemy, straight to a driver:
under load the event loop runs a whole round of request handlers between any two
awaits, about a millisecond, so a transaction of several awaited steps (BEGIN, each
INSERT, COMMIT, the pool's reset) spent most of its time waiting for its turn rather
than writing, while every sender in the batch waited with it. Measured on the 2-core
benchmark machine, a batch of about 30 sends took 8-9 ms to commit that way.

- Postgres: one statement, one round trip, no BEGIN or COMMIT of its own
  (`postgres`).
- SQLite: one transaction on the batcher's own sqlite3 connection (`db.sqlite_writer`),
  synchronously on the event loop with no await when the write lock is free (about
  1.3 ms for 30 sends), on a worker thread when another connection holds it; no WAL
  checkpoints in it (`db.checkpoints` runs them off the loop).

Values go in the form SQLAlchemy itself stores them; a test holds batch rows and
Core-inserted rows equal, column by column.
"""

from __future__ import annotations

import functools
import sqlite3
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql

from appliance.db.engine import json_text
from appliance.db.models import Message, MessageStatusEvent

MESSAGES: Final[Table] = Message.__table__  # type: ignore[attr-defined]
STATUSES: Final[Table] = MessageStatusEvent.__table__  # type: ignore[attr-defined]
# SQLite before 3.32 takes at most 999 parameters per statement.
_SQLITE_MAX_PARAMS: Final = 999
Rows = list[dict[str, Any]]


async def postgres(driver: Any, messages: Rows, statuses: Rows) -> None:
    """Both tables' rows in one statement on an asyncpg connection.

    Each column goes as one array parameter and `unnest` turns the arrays back into
    rows; the messages INSERT is a CTE of the statuses INSERT, so the statement writes
    both, atomically (the foreign key is checked at its end). asyncpg encodes the
    arrays in C and keeps the statement prepared.
    """
    message_columns, status_columns = tuple(messages[0]), tuple(statuses[0])
    await driver.execute(
        _postgres_sql(message_columns, status_columns),
        *_postgres_arrays(messages, message_columns),
        *_postgres_arrays(statuses, status_columns),
    )


def sqlite(conn: sqlite3.Connection, messages: Rows, statuses: Rows) -> None:
    """Both tables' rows, on the SQLite writer's connection inside the transaction
    `SqliteWriter.write` opens and commits."""
    for sql, params in _sqlite_statements(MESSAGES, messages) + _sqlite_statements(
        STATUSES, statuses
    ):
        conn.execute(sql, params)


def _postgres_arrays(rows: Rows, columns: tuple[str, ...]) -> list[list[Any]]:
    # JSON documents go as text, which is what the JSONB codec takes.
    return [
        [json_text(v) if isinstance(v, dict | list) else v for v in (row[c] for row in rows)]
        for c in columns
    ]


@functools.cache
def _postgres_sql(message_columns: tuple[str, ...], status_columns: tuple[str, ...]) -> str:
    return (
        f"WITH m AS ({_unnest_insert(MESSAGES, message_columns, 1)}) "
        f"{_unnest_insert(STATUSES, status_columns, len(message_columns) + 1)}"
    )


def _unnest_insert(table: Table, columns: tuple[str, ...], first: int) -> str:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    arrays = ", ".join(
        f"${first + n}::{table.c[c].type.compile(dialect=dialect)}[]" for n, c in enumerate(columns)
    )
    return f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"


def _sqlite_statements(table: Table, rows: Rows) -> list[tuple[str, list[Any]]]:
    """Multi-row INSERTs of at most `_SQLITE_MAX_PARAMS` parameters each."""
    columns = tuple(rows[0])
    step = max(1, _SQLITE_MAX_PARAMS // len(columns))
    return [
        (
            _values_sql(table.name, columns, len(chunk)),
            [_sqlite_value(row[c]) for row in chunk for c in columns],
        )
        for chunk in (rows[start : start + step] for start in range(0, len(rows), step))
    ]


@functools.cache
def _values_sql(table: str, columns: tuple[str, ...], rows: int) -> str:
    row = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * rows)}"


def _sqlite_value(value: Any) -> Any:
    """A value as SQLAlchemy's SQLite dialect stores it: datetimes as UTC text with
    microseconds, JSON documents as text."""
    if isinstance(value, datetime):
        v = value.astimezone(UTC)
        return (
            f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
            f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
        )
    if isinstance(value, dict | list):
        return json_text(value)
    return value
