"""Session liveness, api side: the session state shown is what the engine last saw, and
/readyz names an engine whose handshakes are stuck.

The engine's heartbeat (what a real engine writes, see engine/test/engine/heartbeat.test.ts)
carries the sessions it holds with their states and its handshake slots; here it is written
to Redis directly so each case (engine dead, alive but not holding, older than the row,
newer than the row) is exact.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.contracts import EngineHeartbeat, HandshakeSlots, SessionState
from appliance.db.models import Session
from appliance.redis_keys import engine_heartbeat_key
from tests.fixtures.api import auth
from tests.fixtures.api_helpers import create_session

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


async def put_beat(
    redis: aioredis.Redis,
    *,
    at: datetime,
    states: dict[str, SessionState] | None = None,
    slots: HandshakeSlots | None = None,
) -> None:
    beat = EngineHeartbeat(
        pid=4242,
        upstream="whatsapp",
        started_at=T0 - timedelta(hours=1),
        uptime_s=3600,
        rss_bytes=1,
        heap_used_bytes=1,
        heap_total_bytes=1,
        sessions=len(states or {}),
        loop_lag_ms=0,
        node_version="v24",
        at=at,
        session_states=states or {},
        handshakes=slots,
    )
    await redis.set(engine_heartbeat_key("whatsapp"), beat.model_dump_json(), ex=60)


async def row_says(
    db: async_sessionmaker[AsyncSession], session_id: str, state: str, at: datetime
) -> None:
    """What the event consumer leaves after applying a `session.state` event of time `at`."""
    async with db() as s, s.begin():
        await s.execute(
            sa.update(Session)
            .where(Session.id == session_id)  # type: ignore[arg-type]
            .values(state=state, state_reason=None, state_changed_at=at)
        )


async def shown(client: httpx.AsyncClient, key: str, name: str) -> dict[str, Any]:
    one = await client.get(f"/v1/sessions/{name}", headers=auth(key))
    assert one.status_code == 200, one.text
    listed = await client.get("/v1/sessions", headers=auth(key))
    [item] = [s for s in listed.json()["items"] if s["name"] == name]
    assert (item["state"], item["stateReason"]) == (one.json()["state"], one.json()["stateReason"])
    body: dict[str, Any] = one.json()
    return body


async def test_a_connected_row_without_a_live_engine_is_not_shown_connected(
    api_client: httpx.AsyncClient,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    body = await create_session(api_client, admin_key, "s1")
    await row_says(db_sessionmaker, body["id"], "connected", T0)
    seen = await shown(api_client, admin_key, "s1")
    assert seen["state"] == "reconnecting"
    assert seen["stateReason"] == "the whatsapp engine is not running (no fresh heartbeat)"


async def test_a_session_the_live_engine_does_not_hold_is_not_shown_connected(
    api_client: httpx.AsyncClient,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
) -> None:
    body = await create_session(api_client, admin_key, "s1")
    await row_says(db_sessionmaker, body["id"], "connected", T0)
    await put_beat(redis, at=T0 + timedelta(seconds=5), states={"other": "connected"})
    seen = await shown(api_client, admin_key, "s1")
    assert seen["state"] == "reconnecting"
    assert seen["stateReason"] == "the whatsapp engine (pid 4242) does not hold this session"


async def test_the_newer_of_row_and_heartbeat_wins(
    api_client: httpx.AsyncClient,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
) -> None:
    body = await create_session(api_client, admin_key, "s1")
    await row_says(db_sessionmaker, body["id"], "connected", T0)
    # Held and connected: the row is right.
    await put_beat(redis, at=T0 + timedelta(seconds=5), states={"s1": "connected"})
    assert (await shown(api_client, admin_key, "s1"))["state"] == "connected"
    # A heartbeat older than the row's event does not contradict it (the session's
    # `connected` arrived after that heartbeat was written).
    await put_beat(redis, at=T0 - timedelta(seconds=1), states={})
    assert (await shown(api_client, admin_key, "s1"))["state"] == "connected"
    # A newer heartbeat that sees it reconnecting (its event not applied yet) wins.
    await put_beat(redis, at=T0 + timedelta(seconds=9), states={"s1": "reconnecting"})
    seen = await shown(api_client, admin_key, "s1")
    assert seen["state"] == "reconnecting"
    assert datetime.fromisoformat(seen["stateChangedAt"]) == T0 + timedelta(seconds=9)


async def test_states_that_need_no_engine_are_shown_as_the_row_says(
    api_client: httpx.AsyncClient,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
) -> None:
    for name, state in (("a", "stopped"), ("b", "logged_out"), ("c", "failed")):
        body = await create_session(api_client, admin_key, name)
        await row_says(db_sessionmaker, body["id"], state, T0)
        assert (await shown(api_client, admin_key, name))["state"] == state
        await put_beat(redis, at=T0 + timedelta(seconds=5), states={})
        assert (await shown(api_client, admin_key, name))["state"] == state
        await redis.delete(engine_heartbeat_key("whatsapp"))
    # A brand-new session no engine picked up yet is `created`, as it is.
    await create_session(api_client, admin_key, "d")
    assert (await shown(api_client, admin_key, "d"))["state"] == "created"


async def test_readyz_names_an_engine_whose_handshakes_wait_past_the_bound(
    api_client: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    now = datetime.now(UTC)
    moving = HandshakeSlots(limit=8, active=8, waiting=3, oldest_active_s=15, oldest_waiting_s=30)
    await put_beat(redis, at=now, slots=moving)
    assert (await api_client.get("/readyz")).status_code == 200
    # 120 s is the default `[engine] handshake_stuck_after_s`.
    stuck = HandshakeSlots(limit=8, active=8, waiting=3, oldest_active_s=400, oldest_waiting_s=121)
    await put_beat(redis, at=now, slots=stuck)
    response = await api_client.get("/readyz")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "NOT_READY"
    assert error["message"] == "not ready: engine.whatsapp"
    assert error["details"]["checks"]["engine.whatsapp"] == (
        "handshakes stuck at the whatsapp upstream: 8 of 8 slots held (oldest 400s), "
        "3 waiting (oldest 121s); bound 120s ([engine] handshake_stuck_after_s)"
    )
