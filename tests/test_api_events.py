from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from appliance.auth import api_keys
from appliance.contracts import (
    CommandRejectedEvent,
    CommandRejectedPayload,
    SessionStateEvent,
    SessionStatePayload,
)
from appliance.db.models import Session
from appliance.redis_keys import EVENTS_STREAM
from tests.fixtures.api import auth

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def owned_sessions(db_sessionmaker: Sessions, tenant_key: str, other_tenant_key: str) -> None:
    mine = (await api_keys.authenticate(db_sessionmaker, tenant_key)).id
    theirs = (await api_keys.authenticate(db_sessionmaker, other_tenant_key)).id
    async with db_sessionmaker() as db, db.begin():
        db.add(Session(name="mine", upstream="sandbox", owner_key_id=mine))
        db.add(Session(name="theirs", upstream="sandbox", owner_key_id=theirs))


def state_event(session: str, st: str = "connecting") -> SessionStateEvent:
    return SessionStateEvent(session=session, payload=SessionStatePayload(state=st))  # type: ignore[arg-type]


async def publish(redis: aioredis.Redis, *events: object) -> list[str]:
    ids = []
    for event in events:
        entry = await redis.xadd(EVENTS_STREAM, {"data": event.model_dump_json()})  # type: ignore[attr-defined]
        ids.append(entry.decode())
    return ids


async def read_sse(response: httpx.Response, want: int) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in current:
                events.append(current)
                if len(events) == want:
                    return events
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = value
    return events


async def test_sse_streams_new_events_a_tenant_may_see(
    live_api_url: str, redis: aioredis.Redis, tenant_key: str, owned_sessions: None
) -> None:
    async with (
        httpx.AsyncClient(base_url=live_api_url, timeout=10) as client,
        client.stream("GET", "/v1/events", headers=auth(tenant_key)) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        rejected = CommandRejectedEvent(
            payload=CommandRejectedPayload(code="INVALID_COMMAND", reason="x")
        )
        ids = await publish(
            redis,
            state_event("theirs"),
            rejected,
            state_event("mine", "qr"),
            state_event("mine", "connected"),
        )
        events = await asyncio.wait_for(read_sse(response, 2), 10)
    assert [e["id"] for e in events] == ids[2:]
    assert [e["event"] for e in events] == ["session.state", "session.state"]
    body = orjson.loads(events[1]["data"])
    assert body["session"] == "mine"
    assert body["data"]["state"] == "connected"
    assert body["streamId"] == ids[3]


async def test_sse_resumes_after_last_event_id_and_filters_by_type(
    live_api_url: str, redis: aioredis.Redis, admin_key: str, owned_sessions: None
) -> None:
    ids = await publish(
        redis, state_event("mine"), state_event("theirs"), state_event("mine", "qr")
    )
    headers = {**auth(admin_key), "Last-Event-ID": ids[0]}
    async with (
        httpx.AsyncClient(base_url=live_api_url, timeout=10) as client,
        client.stream(
            "GET",
            "/v1/events",
            params={"session": "mine", "type": "session.state"},
            headers=headers,
        ) as response,
    ):
        events = await asyncio.wait_for(read_sse(response, 1), 10)
    assert [e["id"] for e in events] == [ids[2]]


async def test_sse_refuses_another_tenants_session_and_unknown_types(
    api_client: httpx.AsyncClient, tenant_key: str, owned_sessions: None
) -> None:
    other = await api_client.get(
        "/v1/events", params={"session": "theirs"}, headers=auth(tenant_key)
    )
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "NOT_FOUND"
    unknown = await api_client.get("/v1/events", params={"type": "nope"}, headers=auth(tenant_key))
    assert unknown.status_code == 422
    bad_cursor = await api_client.get(
        "/v1/events", params={"since": "yesterday"}, headers=auth(tenant_key)
    )
    assert bad_cursor.status_code == 422
    anonymous = await api_client.get("/v1/events")
    assert anonymous.status_code == 401


async def test_the_websocket_streams_events_and_accepts_the_key_as_a_query_parameter(
    live_api_url: str, redis: aioredis.Redis, tenant_key: str, owned_sessions: None
) -> None:
    ws_url = live_api_url.replace("http://", "ws://") + f"/v1/events/ws?apiKey={tenant_key}"
    async with connect(ws_url) as ws:
        await publish(redis, state_event("theirs"), state_event("mine", "qr"))
        message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    assert (message["session"], message["data"]["state"]) == ("mine", "qr")


async def test_the_websocket_closes_on_a_bad_key(live_api_url: str, owned_sessions: None) -> None:
    ws_url = live_api_url.replace("http://", "ws://") + "/v1/events/ws?apiKey=wapp_x_y"
    with pytest.raises(ConnectionClosed) as info:
        async with connect(ws_url) as ws:
            await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1008
    assert "UNAUTHORIZED" in info.value.rcvd.reason
