"""One way to read a key: every entry gives the same answer.

The entries are a REST route (`GET /v1/keys/me`, the FastAPI dependency), the JSON send
(answered at the router's entry), `GET /metrics` (with `metrics_access = "admin"`) and
the event WebSocket, all on one real uvicorn, so all share the client's address.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from appliance.api.app import create_app
from appliance.auth import api_keys
from appliance.auth.presented import MISSING, presented_key
from appliance.contracts import SessionStateEvent, SessionStatePayload
from appliance.redis_keys import EVENTS_STREAM
from tests.fixtures.api import served
from tests.fixtures.api_helpers import connected_session
from tests.fixtures.settings import MakeSettings

Db = async_sessionmaker[AsyncSession]
LIMIT = 10  # [api] auth_failure_limit's default
ENTRIES = ("route", "send", "metrics", "websocket")
TEXT = {"type": "text", "to": "4915112345678", "text": "hi"}


@pytest.mark.parametrize(
    ("authorization", "api_key", "query_key", "expected"),
    [
        ("Bearer wapp_a_b", None, None, "wapp_a_b"),
        ("bearer wapp_a_b", None, None, "wapp_a_b"),
        ("BEARER   wapp_a_b  ", None, None, "wapp_a_b"),
        ("Bearer wapp_a_b", "wapp_c_d", "wapp_e_f", "wapp_a_b"),
        ("Basic dXNlcjpwYXNz", "wapp_c_d", None, "wapp_c_d"),
        ("Bearer", None, "wapp_e_f", "wapp_e_f"),
        ("Bearer   ", "wapp_c_d", None, "wapp_c_d"),
        (None, None, "wapp_e_f", "wapp_e_f"),
        ("Bearer not-a-key", None, None, "not-a-key"),
        (None, "", "", None),
        ("", None, None, None),
        ("Basic dXNlcjpwYXNz", None, None, None),
    ],
)
def test_where_a_key_is_read_from(
    authorization: str | None, api_key: str | None, query_key: str | None, expected: str | None
) -> None:
    assert presented_key(authorization, api_key, query_key) == expected


@dataclass(frozen=True)
class Answer:
    """A refusal as each entry gives it; `accepted` when the key was taken."""

    accepted: bool
    code: str = ""
    message: str = ""


@pytest.fixture
async def api_url(
    make_settings: MakeSettings, database_url: str, redis: aioredis.Redis
) -> AsyncIterator[str]:
    settings = make_settings(database={"url": database_url}, api={"metrics_access": "admin"})
    async with served(create_app(settings)) as url:
        yield url


async def _http(url: str, entry: str, headers: dict[str, str]) -> Answer:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        if entry == "route":
            response = await client.get("/v1/keys/me", headers=headers)
        elif entry == "send":
            response = await client.post(
                "/v1/sessions/sales-1/messages", json=TEXT, headers=headers
            )
        else:
            response = await client.get("/metrics", headers=headers)
    if response.status_code < 300:
        return Answer(accepted=True)
    error = response.json()["error"]
    if response.status_code == 429:
        assert int(response.headers["retry-after"]) >= 1
    return Answer(accepted=False, code=error["code"], message=error["message"])


async def _websocket(
    url: str, headers: dict[str, str], query: str, redis: aioredis.Redis
) -> Answer:
    ws_url = url.replace("http://", "ws://") + "/v1/events/ws" + query
    try:
        async with connect(ws_url, additional_headers=headers) as ws:
            # Taken: an event published now arrives (a refused key is closed instead).
            event = SessionStateEvent(
                session="sales-1", payload=SessionStatePayload(state="connecting")
            )
            await redis.xadd(EVENTS_STREAM, {"data": event.model_dump_json()})
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert message["session"] == "sales-1"
            return Answer(accepted=True)
    except ConnectionClosed as closed:
        received = closed.rcvd
    assert received is not None
    assert received.code == 1008
    code, _, message = received.reason.partition(": ")
    return Answer(accepted=False, code=code, message=message)


async def answers(
    url: str, redis: aioredis.Redis, headers: dict[str, str], query: str = ""
) -> dict[str, Answer]:
    found = {entry: await _http(url, entry, headers) for entry in ENTRIES[:-1]}
    found["websocket"] = await _websocket(url, headers, query, redis)
    return found


def refused_everywhere(found: dict[str, Answer], code: str, message: str) -> None:
    for entry, answer in found.items():
        assert not answer.accepted, entry
        assert answer.code == code, entry
        # A WebSocket close reason is cut at 120 bytes (RFC 6455 allows 123).
        whole = f"{code}: {message}"
        limit = 120 if entry == "websocket" else len(whole)
        assert f"{answer.code}: {answer.message}" == whole[:limit], entry


async def test_a_lowercase_bearer_is_taken_everywhere(
    api_url: str, redis: aioredis.Redis, admin_key: str, db_sessionmaker: Db
) -> None:
    async with httpx.AsyncClient(base_url=api_url) as client:
        await connected_session(client, admin_key, db_sessionmaker)
    found = await answers(api_url, redis, {"Authorization": f"bearer {admin_key}"})
    assert found == {entry: Answer(accepted=True) for entry in ENTRIES}


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, MISSING),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, MISSING),
        ({"Authorization": "Bearer"}, MISSING),
        ({"Authorization": "Bearer not-a-key"}, "malformed API key"),
        ({"X-Api-Key": "wapp_nounderscore"}, "malformed API key"),
        ({"Authorization": "Bearer wapp_unknownid_secret"}, "invalid API key"),
    ],
)
async def test_missing_and_malformed_keys_get_one_answer_everywhere(
    api_url: str, redis: aioredis.Redis, headers: dict[str, str], message: str
) -> None:
    refused_everywhere(await answers(api_url, redis, headers), "UNAUTHORIZED", message)


async def test_a_revoked_key_gets_one_answer_everywhere_then_is_throttled_everywhere(
    api_url: str, redis: aioredis.Redis, db_sessionmaker: Db
) -> None:
    revoked = await api_keys.create_api_key(db_sessionmaker, name="old", role="admin")
    await api_keys.revoke_api_key(db_sessionmaker, revoked.key.id)
    first = await answers(api_url, redis, {"Authorization": f"Bearer {revoked.plaintext}"})
    refused_everywhere(first, "UNAUTHORIZED", "invalid API key")
    # In the query, where only the WebSocket reads it: the same key, the same answer.
    by_query = await _websocket(api_url, {}, f"?apiKey={revoked.plaintext}", redis)
    assert by_query == first["websocket"]
    # Five failures so far, all counted for this key id from this address, whichever
    # entry saw them; five more reach the limit.
    for _ in range(LIMIT - 5):
        assert (await _http(api_url, "route", {"X-Api-Key": revoked.plaintext})).code == (
            "UNAUTHORIZED"
        )
    throttled = await answers(api_url, redis, {"Authorization": f"bearer {revoked.plaintext}"})
    refused_everywhere(
        throttled, "RATE_LIMITED", "too many requests with a bad API key from this address"
    )
