"""Statements both databases spell differently."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from appliance.db.models import Table


async def insert_or_ignore(session: AsyncSession, row: Table) -> bool:
    """INSERT the row unless it breaks a unique constraint; True when it was inserted.

    The event consumer's idempotency: a replayed event hits the unique constraint of
    what it already wrote (processed event id, status per message, inbound wa_id,
    delivery per endpoint and event) and changes nothing. Unlike catching
    IntegrityError this leaves the transaction usable, on Postgres too.
    """
    table = type(row).__table__  # type: ignore[attr-defined]
    values = {column.name: getattr(row, column.name) for column in table.columns}
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table).values(**values).on_conflict_do_nothing()
    result = cast(CursorResult[Any], await session.execute(stmt))
    return result.rowcount == 1
