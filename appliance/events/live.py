"""Live events for SSE and WebSocket clients: read `wapp:events` directly (XREAD).

Not through the consumer group: every listener sees every event, and the stream entry
id doubles as the resumable cursor (`Last-Event-ID`). Tenants only see events of
sessions their key owns; events without a session (e.g. a rejected command) are for
admins only.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance.contracts import EVENT_ADAPTER, Event
from appliance.db.models import Session
from appliance.redis_keys import EVENTS_STREAM

OWNER_CACHE_S = 5.0


@dataclass
class Visibility:
    """Which events one listener may see; session owners cached briefly per listener."""

    reader: async_sessionmaker[AsyncSession]
    key_id: str
    is_admin: bool
    sessions: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    # Engine name -> (owner key, the name its owner gave, when read).
    _owners: dict[str, tuple[str | None, str | None, float]] = field(default_factory=dict)

    async def _row(self, name: str) -> tuple[str | None, str | None]:
        cached = self._owners.get(name)
        if cached is not None and time.monotonic() - cached[2] < OWNER_CACHE_S:
            return cached[0], cached[1]
        async with self.reader() as db:
            found = (
                await db.execute(
                    sa.select(col(Session.owner_key_id), col(Session.display_name)).where(
                        col(Session.name) == name
                    )
                )
            ).first()
        owner, display = (found[0], found[1]) if found is not None else (None, None)
        self._owners[name] = (owner, display, time.monotonic())
        return owner, display

    async def _owner(self, name: str) -> str | None:
        return (await self._row(name))[0]

    async def shown(self, event: Event) -> Event:
        """The event with its session as its owner named it (events carry engine names,
        which differ when another key had the name first: services/session_names)."""
        if event.session is None:
            return event
        display = (await self._row(event.session))[1]
        if display is None or display == event.session:
            return event
        return event.model_copy(update={"session": display})

    async def allows(self, event: Event) -> bool:
        if self.types and event.type not in self.types:
            return False
        if self.sessions and event.session not in self.sessions:
            return False
        if self.is_admin:
            return True
        if event.session is None:
            return False
        return await self._owner(event.session) == self.key_id


async def follow(
    redis: aioredis.Redis, visibility: Visibility, *, after: str, block_ms: int = 15000
) -> AsyncIterator[tuple[str, Event] | None]:
    """Yield (stream id, event) from after `after`; None when idle (send a keep-alive)."""
    cursor = after
    while True:
        response = await redis.xread({EVENTS_STREAM: cursor}, count=100, block=block_ms)
        if not response:
            yield None
            continue
        for _stream, entries in response:
            for entry_id, fields in entries:
                cursor = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                raw = fields.get(b"data")
                if raw is None:
                    continue
                try:
                    event = EVENT_ADAPTER.validate_json(raw)
                except ValidationError:
                    continue  # the consumer logs poison entries; listeners skip them
                if await visibility.allows(event):
                    yield cursor, await visibility.shown(event)


async def latest_id(redis: aioredis.Redis) -> str:
    """The id of the newest entry, so a fresh listener starts at 'now' without racing."""
    entries = await redis.xrevrange(EVENTS_STREAM, count=1)
    if not entries:
        return "0-0"
    entry_id = entries[0][0]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
