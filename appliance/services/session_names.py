"""Session names are per key: two tenants may both call a session `sales`.

A session has two names. `display_name` is the one its owner gave: unique per owner
key, what the API shows and takes (`/v1/sessions/{name}`). `name` is its engine name:
unique on the box, because the engine, the Redis keys (`wapp:cmd:{name}`, `wapp:qr:{name}`)
and the events know a session only by it. The engine name is the display name, unless
another key's session already has that engine name; then it is `<name>-<6 hex>` (still
a valid session name). So a tenant never learns from a 409 that another tenant uses a
name: only its own sessions conflict.

Lookups by reference: a tenant's `ref` is one of its own sessions' id or display name
(nothing else matches, so another tenant's session of the same name is never found);
an admin's is any session's id, its own display name, an engine name, then any
display name, in that order.
"""

from __future__ import annotations

import secrets
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance.db.models import Session

MAX_NAME: Final = 64
_SUFFIX_HEX: Final = 6


def find(ref: str, *, key_id: str | None, is_admin: bool) -> sa.Select[tuple[Session]]:
    """The sessions `ref` may mean for this caller, best match first (take `.first()`)."""
    if not is_admin:
        return sa.select(Session).where(
            col(Session.owner_key_id) == key_id,
            sa.or_(col(Session.id) == ref, col(Session.display_name) == ref),
        )
    rank = sa.case(
        (col(Session.id) == ref, 0),
        (sa.and_(col(Session.display_name) == ref, col(Session.owner_key_id) == key_id), 1),
        (col(Session.name) == ref, 2),
        else_=3,
    )
    return (
        sa.select(Session)
        .where(
            sa.or_(
                col(Session.id) == ref,
                col(Session.name) == ref,
                col(Session.display_name) == ref,
            )
        )
        .order_by(rank, col(Session.created_at), col(Session.id))
    )


def cache_key(ref: str, *, key_id: str, is_admin: bool) -> str:
    """What `session_cache` keeps a lookup under: the same ref means different sessions
    to different keys."""
    return f"{'*' if is_admin else key_id}\x00{ref}"


def _suffixed(requested: str) -> str:
    suffix = secrets.token_hex(_SUFFIX_HEX // 2)
    return f"{requested[: MAX_NAME - len(suffix) - 1]}-{suffix}"


async def engine_name(
    reader: async_sessionmaker[AsyncSession], requested: str, *, taken_ok: bool = False
) -> str:
    """The engine name for a new session named `requested`: itself when free on the box.

    `taken_ok`: a retry after the name was taken between this read and the insert.
    """
    if not taken_ok:
        async with reader() as db:
            taken = await db.scalar(
                sa.select(sa.func.count())
                .select_from(Session)
                .where(col(Session.name) == requested)
            )
        if not taken:
            return requested
    return _suffixed(requested)


async def owns_display_name(
    reader: async_sessionmaker[AsyncSession], key_id: str, name: str
) -> bool:
    async with reader() as db:
        found = await db.scalar(
            sa.select(sa.func.count())
            .select_from(Session)
            .where(col(Session.owner_key_id) == key_id, col(Session.display_name) == name)
        )
    return bool(found)
