"""The JSON send goes through every middleware of the app, so a middleware added later
cannot silently skip the busiest endpoint.

The JSON send is answered at the router's entry (appliance/api/fast_send.py), below the
app's whole middleware stack. `PINNED` is that stack, outermost first, each layer with
the test here that shows it acting on a JSON send; a layer added to the app without one
fails `test_the_middleware_stack_is_pinned_and_ends_in_the_send_entry`.
"""

from __future__ import annotations

import logging

import httpx
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.api.app import WappApi, create_app
from appliance.api.fast_send import ROUTE, SendEntry
from appliance.db.models import Message as MessageRow
from appliance.metrics.http import StoredRequests
from appliance.settings import Settings
from tests.fixtures.api import auth, running_api
from tests.fixtures.api_helpers import connected_session, session_commands

Db = async_sessionmaker[AsyncSession]
TEXT = {"type": "text", "to": "4915112345678", "text": "hi"}
SEND = "/v1/sessions/sales-1/messages"

# The pin itself, for layers with nothing to show on a JSON send.
PIN = "test_the_middleware_stack_is_pinned_and_ends_in_the_send_entry"
# Each layer of the app, outermost first, and the test showing it on the JSON send.
PINNED = {
    # The trace id header and the one log line per request; request metrics are counted
    # by its `observe` hook.
    "TraceMiddleware": "test_the_json_send_is_traced_logged_and_counted",
    # The app's 500 handler (`_on_unexpected`): the one error shape for the unexpected.
    "ServerErrorMiddleware": "test_an_unexpected_failure_answers_500_in_the_error_shape",
    # Reports exceptions to OpenTelemetry when a provider is configured (none here):
    # nothing to observe without one; being above the entry is what the pin checks.
    "ExceptionTelemetryMiddleware": PIN,
    # FastAPI's `max_body_size`, on when set on the app.
    "AppBodyLimitMiddleware": "test_the_apps_body_limit_applies_to_the_json_send",
    # The app's exception handlers: WappError and validation errors in the one shape.
    "ExceptionMiddleware": "test_refusals_are_answered_by_the_apps_handlers",
    # Closes what FastAPI's form parsing opened; a JSON send opens nothing, so it has
    # nothing to show beyond being above the entry.
    "AsyncExitStackMiddleware": PIN,
}


def layers(app: WappApi) -> list[str]:
    """The app's middleware, outermost first, down to the router."""
    found = [type(app.traced).__name__]
    layer: ASGIApp = app.build_middleware_stack()
    while layer is not app.router:
        found.append(type(layer).__name__)
        layer = layer.app  # type: ignore[attr-defined]
    return found


def test_the_middleware_stack_is_pinned_and_ends_in_the_send_entry(
    db_settings: Settings,
) -> None:
    app = create_app(db_settings)
    assert isinstance(app, WappApi)
    assert layers(app) == list(PINNED)
    assert set(PINNED.values()) <= set(globals()), "each layer names a test of this module"
    # The router's own entry is the JSON send's, in front of route matching.
    entry = app.router.middleware_stack
    assert isinstance(entry, SendEntry)
    assert entry.router == app.router.app


class Stamp:
    """A middleware the app does not have: added, it must wrap the JSON send too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-stamped", b"yes")]
            await send(message)

        await self.app(scope, receive, stamped)


async def test_a_middleware_added_to_the_app_wraps_the_json_send(
    db_settings: Settings, redis: aioredis.Redis, tenant_key: str, db_sessionmaker: Db
) -> None:
    app = create_app(db_settings)
    app.add_middleware(Stamp)
    assert isinstance(app, WappApi)
    assert "Stamp" in layers(app)
    async with running_api(app) as client:
        await connected_session(client, tenant_key, db_sessionmaker)
        sent = await client.post(SEND, json=TEXT, headers=auth(tenant_key))
        refused = await client.post(SEND, json=TEXT)
    assert sent.status_code == 202
    assert sent.headers["x-stamped"] == "yes"
    assert refused.status_code == 401
    assert refused.headers["x-stamped"] == "yes"


async def test_the_json_send_is_traced_logged_and_counted(
    db_settings: Settings,
    redis: aioredis.Redis,
    tenant_key: str,
    db_sessionmaker: Db,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(db_settings)
    assert isinstance(app, WappApi)
    async with running_api(app) as client:
        await connected_session(client, tenant_key, db_sessionmaker)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="appliance.api.request"):
            sent = await client.post(
                SEND, json=TEXT, headers={**auth(tenant_key), "X-Trace-Id": "trace-send-1"}
            )
            refused = await client.post(SEND, json={"type": "text"}, headers=auth(tenant_key))
        await app.request_metrics.flush(redis)
    assert sent.status_code == 202
    assert sent.headers["x-trace-id"] == "trace-send-1"
    assert refused.status_code == 422
    assert refused.headers["x-trace-id"]
    lines = [r for r in caplog.records if r.name == "appliance.api.request"]
    assert [(r.method, r.path, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("POST", SEND, 202),
        ("POST", SEND, 422),
    ]
    counted = (await StoredRequests.read(redis)).requests
    assert counted[f"POST|{ROUTE}|202"] == 1
    assert counted[f"POST|{ROUTE}|422"] == 1


async def test_refusals_are_answered_by_the_apps_handlers(
    api_client: httpx.AsyncClient, tenant_key: str, db_sessionmaker: Db
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    answers = {
        "no key": await api_client.post(SEND, json=TEXT),
        "unknown session": await api_client.post(
            "/v1/sessions/nope/messages", json=TEXT, headers=auth(tenant_key)
        ),
        "bad body": await api_client.post(
            SEND, json={**TEXT, "to": "12"}, headers=auth(tenant_key)
        ),
        "not json": await api_client.post(
            SEND,
            content=b"{",
            headers={**auth(tenant_key), "Content-Type": "application/json"},
        ),
    }
    codes = {name: (a.status_code, a.json()["error"]["code"]) for name, a in answers.items()}
    assert codes == {
        "no key": (401, "UNAUTHORIZED"),
        "unknown session": (404, "NOT_FOUND"),
        "bad body": (422, "VALIDATION_ERROR"),
        "not json": (422, "VALIDATION_ERROR"),
    }
    for answer in answers.values():
        body = answer.json()
        assert body["success"] is False
        assert set(body["error"]) == {"code", "message", "details"}
    assert answers["bad body"].json()["error"]["details"]["fields"][0]["field"] == "body.text.to"


async def test_an_unexpected_failure_answers_500_in_the_error_shape(
    db_settings: Settings,
    redis: aioredis.Redis,
    tenant_key: str,
    db_sessionmaker: Db,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(db_settings)
    async with running_api(app) as client:
        await connected_session(client, tenant_key, db_sessionmaker)
        # A realistic fault: a table every send writes is gone.
        async with db_sessionmaker() as db, db.begin():
            await db.execute(sa.text("DROP TABLE message_status_events"))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="appliance.api.request"):
            response = await client.post(
                SEND, json=TEXT, headers={**auth(tenant_key), "X-Trace-Id": "trace-500"}
            )
    assert response.status_code == 500
    assert response.headers["x-trace-id"] == "trace-500"
    assert response.json()["error"]["code"] == "INTERNAL_ERROR"
    # The request's one line is the error's log, with its stack.
    (line,) = [r for r in caplog.records if r.name == "appliance.api.request"]
    assert line.levelno == logging.ERROR
    assert line.exc_info is not None
    assert await session_commands(redis, "sales-1") == []


async def test_the_apps_body_limit_applies_to_the_json_send(
    db_settings: Settings, redis: aioredis.Redis, tenant_key: str, db_sessionmaker: Db
) -> None:
    app: FastAPI = create_app(db_settings)
    # FastAPI's own limit, set on the app (none is set by default: the JSON send has its
    # own 1 MiB, and multipart uploads `[media] max_bytes`).
    app.max_body_size = 256
    async with running_api(app) as client:
        await connected_session(client, tenant_key, db_sessionmaker)
        small = await client.post(SEND, json=TEXT, headers=auth(tenant_key))
        large = await client.post(SEND, json={**TEXT, "text": "x" * 300}, headers=auth(tenant_key))
        # The same layer on a route, for comparison: its answer is Starlette's own.
        routed = await client.post(
            "/v1/sessions", json={"name": "x" * 300}, headers=auth(tenant_key)
        )
    assert small.status_code == 202
    assert (large.status_code, large.content) == (routed.status_code, routed.content)
    assert large.status_code == 413
    async with db_sessionmaker() as db:
        assert len((await db.scalars(sa.select(MessageRow))).all()) == 1
    assert len(await session_commands(redis, "sales-1")) == 1


@pytest.mark.parametrize("idempotency_key", ["", "k" * 256])
async def test_a_json_send_the_route_refuses_by_its_header_answers_422(
    api_client: httpx.AsyncClient,
    tenant_key: str,
    db_sessionmaker: Db,
    redis: aioredis.Redis,
    idempotency_key: str,
) -> None:
    # Left to the route (the entry takes only keys of 1-255 characters), whose header
    # validation refuses it before any body is read: its JSON is never parsed there.
    await connected_session(api_client, tenant_key, db_sessionmaker)
    response = await api_client.post(
        SEND, json=TEXT, headers={**auth(tenant_key), "Idempotency-Key": idempotency_key}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["fields"][0]["field"].lower() == "header.idempotency-key"
    assert await session_commands(redis, "sales-1") == []
