"""What the api tests share: reading what really landed in Redis and the database."""

from __future__ import annotations

from typing import Any

import httpx
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance import redis_keys
from appliance.contracts import COMMAND_ADAPTER, EngineHeartbeat, Upstream
from appliance.db.models import Session
from tests.fixtures.api import auth


async def commands_on(redis: aioredis.Redis, stream: str) -> list[Any]:
    """Every envelope on a stream, each validated as the engine would validate it."""
    entries = await redis.xrange(stream)
    out = []
    for _, fields in entries:
        assert set(fields) == {b"data"}
        out.append(COMMAND_ADAPTER.validate_json(fields[b"data"]))
    return out


async def control_commands(redis: aioredis.Redis, upstream: Upstream = "whatsapp") -> list[Any]:
    return await commands_on(redis, redis_keys.engine_commands_stream(upstream))


async def create_session(
    client: httpx.AsyncClient, key: str, name: str = "sales-1", **extra: Any
) -> dict[str, Any]:
    response = await client.post("/v1/sessions", json={"name": name, **extra}, headers=auth(key))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def set_state(
    db: async_sessionmaker[AsyncSession],
    session_id: str,
    state: str,
    *,
    me_jid: str | None = None,
    me_lid: str | None = None,
) -> None:
    """What the event consumer does in production when the engine reports a state."""
    async with db() as s, s.begin():
        await s.execute(
            sa.update(Session)
            .where(Session.id == session_id)  # type: ignore[arg-type]
            .values(state=state, me_jid=me_jid, me_lid=me_lid)
        )


async def put_heartbeat(
    redis: aioredis.Redis, *, upstream: Upstream = "whatsapp", rss_mb: int, sessions: int
) -> None:
    beat = EngineHeartbeat(
        pid=1,
        upstream=upstream,
        started_at="2026-11-25T00:00:00Z",  # type: ignore[arg-type]
        uptime_s=1,
        rss_bytes=rss_mb * 1024 * 1024,
        heap_used_bytes=1,
        heap_total_bytes=1,
        sessions=sessions,
        loop_lag_ms=0,
        node_version="v24",
    )
    await redis.set(redis_keys.engine_heartbeat_key(upstream), beat.model_dump_json(), ex=60)


async def connected_session(
    client: httpx.AsyncClient,
    key: str,
    db: async_sessionmaker[AsyncSession],
    name: str = "sales-1",
    **extra: Any,
) -> dict[str, Any]:
    """A session whose row says `connected`, as the event consumer would leave it."""
    body = await create_session(client, key, name, **extra)
    await set_state(db, body["id"], "connected", me_jid="4915100001@s.whatsapp.net")
    return body


async def session_commands(redis: aioredis.Redis, session: str) -> list[Any]:
    return await commands_on(redis, redis_keys.session_commands_stream(session))


async def inbound_message(
    db: async_sessionmaker[AsyncSession],
    session_id: str,
    *,
    wa_id: str = "3A0000000000000001",
    chat: str = "4915122222222@s.whatsapp.net",
    payload: dict[str, Any] | None = None,
    kind: str = "text",
) -> str:
    """An inbound row as the event consumer stores a `message.received` event."""
    from appliance.db.models import Message

    row = Message(
        session_id=session_id,
        direction="in",
        kind=kind,
        chat=chat,
        sender_pn=chat,
        status="received",
        wa_id=wa_id,
        payload=payload or {"text": "hello", "kind": kind, "wa_id": wa_id, "chat": chat},
    )
    async with db() as s, s.begin():
        s.add(row)
    return row.id
