"""Creating a named session as the API and the CLI both do it: claim the sandbox phone,
pick the engine name, insert, and retry once with a suffixed engine name when another
key's session took the name in between (session_names)."""

from __future__ import annotations

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.auth.principal import Principal
from appliance.contracts import PacingOverrides, Upstream
from appliance.db.models import Session
from appliance.services import sandbox, session_names, sessions
from appliance.settings import Settings


async def create_named(
    *,
    writer: async_sessionmaker[AsyncSession],
    reader: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
    settings: Settings,
    principal: Principal,
    name: str,
    upstream: Upstream,
    pacing: PacingOverrides | None = None,
    push_name: str | None = None,
    phone: str | None = None,
) -> Session:
    if upstream == "sandbox" and phone is not None and settings.sandbox.enabled:
        # A sandbox phone is its key's: another tenant's answers 404 (no hijack).
        await sandbox.claim_number(writer, principal, phone)
    retry = False
    while True:
        new = sessions.NewSession(
            name=await session_names.engine_name(reader, name, taken_ok=retry),
            display_name=name,
            upstream=upstream,
            pacing=pacing,
            push_name=push_name,
            phone=phone,
        )
        try:
            return await sessions.create(writer, redis, settings, principal, new)
        except sessions.SessionExists:
            # Our own name is a conflict; another key's engine name, taken since we
            # looked, is not: take a suffixed one instead (once is plenty).
            if retry or await session_names.owns_display_name(reader, principal.key.id, name):
                raise
            retry = True
