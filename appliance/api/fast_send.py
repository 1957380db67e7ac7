"""The JSON send: `POST /v1/sessions/{session}/messages` with a JSON body.

It is the api's hot path. Route matching (every route tried in turn) and FastAPI's
per-request dependency solving cost more CPU than the send itself, so `send_json` is
the one function that accepts a JSON send, and `SendEntry` answers it at the router's
entry: below every middleware of the app, above route matching.

`create_app` puts `SendEntry` in front of the router (`WappApi`), so whatever wraps the
router wraps the JSON send too: the trace id and the one log line per request, request
metrics (`TraceMiddleware`), FastAPI's error, telemetry and body-limit layers, the app's
exception handlers (the one error shape: `send_json` raises, the handlers answer) and any
middleware added to the app later. tests/test_api_send_entry.py pins that stack.

Anything else on the router goes on to it; so does a multipart send (the route serves
it) and an `Idempotency-Key` the route's header validation refuses (422). The route
stays the one in the OpenAPI document.
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import ValidationError
from starlette.datastructures import State
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from appliance.api.routes import messages as routes
from appliance.api.state import AppState
from appliance.auth import presented
from appliance.errors import PayloadTooLarge
from appliance.metrics import http as http_metrics
from appliance.services import messages, sessions

_PATH: Final = re.compile(r"^/v1/sessions/([^/]+)/messages$")
ROUTE: Final = "/v1/sessions/{session}/messages"
_IDEMPOTENCY_MAX: Final = 255
# A text is at most 65,536 characters (4 bytes each in UTF-8 at worst), mentions and a
# contact card far less: no valid JSON send comes near this.
MAX_JSON_BODY: Final = 1024 * 1024
_JSON_HEADERS: Final = [(b"content-type", b"application/json")]


def _headers(scope: Scope) -> dict[bytes, bytes]:
    # The first value of a repeated header, as Starlette's `Headers.get` gives.
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        found.setdefault(name, value)
    return found


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_JSON_BODY:
            raise PayloadTooLarge(
                f"a JSON send is at most {MAX_JSON_BODY} bytes",
                details={"maxBytes": MAX_JSON_BODY},
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def handles(scope: Scope) -> tuple[str, dict[bytes, bytes]] | None:
    """(session reference, headers) when this request is a JSON send; the headers are
    read once, here, for the whole request."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    match = _PATH.match(path)
    if match is None:
        return None
    headers = _headers(scope)
    if headers.get(b"content-type", b"").startswith(b"multipart/form-data"):
        return None
    idempotency = headers.get(b"idempotency-key")
    if idempotency is not None and not 0 < len(idempotency) <= _IDEMPOTENCY_MAX:
        return None
    return match.group(1), headers


async def send_json(
    state: AppState,
    scope: Scope,
    receive: Receive,
    session_ref: str,
    headers: dict[bytes, bytes],
) -> bytes:
    """Accept one JSON send and give its 202 body; errors are raised (WappError,
    RequestValidationError) for the app's handlers. The steps in the route's order: the
    key (`presented.authenticate`), the session (its 1 s row cache), the body (up to
    `MAX_JSON_BODY`, validated with the route's adapter), `messages.send`."""
    client = scope.get("client")
    principal = await presented.authenticate(
        state.reader,
        state.redis,
        state.settings.api,
        address=client[0] if client else "unknown",
        authorization=_text(headers.get(b"authorization")),
        api_key=_text(headers.get(b"x-api-key")),
    )
    row = await sessions.get_cached(state.reader, principal, session_ref)
    raw = await _body(receive)
    try:
        body = routes.BODY.validate_json(raw)
    except ValidationError as exc:
        raise routes.body_error(exc, "body") from exc
    accepted = await messages.send(
        writer=state.writer,
        reader=state.reader,
        redis=state.redis,
        settings=state.settings,
        principal=principal,
        session=row,
        body=body,
        idempotency_key=_text(headers.get(b"idempotency-key")),
        batcher=state.sends,
    )
    return routes.accepted_json(accepted.message, row)


class SendEntry:
    """The router's entry: a JSON send is answered by `send_json`, anything else goes
    on to `router` (the router's own stack). `state` is the app's (`app.state`), whose
    `wapp` the lifespan sets."""

    def __init__(self, router: ASGIApp, state: State) -> None:
        self.router = router
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = handles(scope)
        if found is None:
            await self.router(scope, receive, send)
            return
        # Request metrics count it under the route's template, as if the router had matched.
        scope[http_metrics.ROUTE_KEY] = ROUTE
        session_ref, headers = found
        wapp: AppState = self.state.wapp
        try:
            body = await send_json(wapp, scope, receive, session_ref, headers)
        except ClientDisconnect:
            return  # nobody left to answer
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
