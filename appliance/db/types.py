"""Column types that behave the same on SQLite and on Postgres."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from appliance import ids


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(ids.uuid7())


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on both databases.

    Postgres keeps the offset (timestamptz); SQLite has no datetime type and SQLAlchemy
    stores text without an offset, so values are normalised to UTC on the way in and
    tagged UTC on the way out. Naive values are refused: they would silently mean
    "whatever the server's zone is".
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: use an aware datetime (UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JSONDocument(sa.types.TypeDecorator[Any]):
    """JSON: JSONB on Postgres (compact, comparable), JSON text on SQLite."""

    impl = sa.JSON()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB(none_as_null=True))
        return dialect.type_descriptor(sa.JSON(none_as_null=True))


# Fixed-length string types, usable as SQLModel `sa_type=` (which takes a class).
class Id(sa.String):
    """A string UUID (36 characters), the primary key of every table."""

    def __init__(self) -> None:
        super().__init__(36)


class Code(sa.String):
    """A short enumerated value: role, state, status, kind, direction."""

    def __init__(self) -> None:
        super().__init__(32)
