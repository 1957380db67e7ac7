"""The JSON send, served ahead of FastAPI's middleware, routing and dependency machinery.

`POST /v1/sessions/{session}/messages` with a JSON body is the api's hot path. Under
load, the layers FastAPI puts around every request (its error, telemetry and body-limit
middleware, route matching that tries every route in turn, per-request dependency
solving) cost more CPU than the send itself. `WappApi.__call__` hands exactly that
request to `FastSend`, which takes the same steps as the route, in the same order:
throttle and key (`auth.principal_for`), session (`sessions.get_cached`), body
(`routes.messages` body adapter), `messages.send`, the same 202 body. Errors become the
same single-shape responses the app's handlers give, an unexpected one included (logged
with its trace, answered 500). Anything else, a multipart send or an `Idempotency-Key`
FastAPI would refuse, goes through the app as usual; the route stays the documented
(OpenAPI) one and serves multipart sends.

`FastSend` runs inside the app's outermost `TraceMiddleware` (`WappApi`), so the
`X-Trace-Id` header and the one log line per request are the same as on any route.
"""

from __future__ import annotations

import re
from typing import Final

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from appliance.api import auth
from appliance.api.errors import error_response, unexpected_response, validation_response
from appliance.api.routes import messages as routes
from appliance.api.state import AppState
from appliance.errors import PayloadTooLarge, WappError
from appliance.metrics import http as http_metrics
from appliance.services import messages, sessions

_PATH: Final = re.compile(r"^/v1/sessions/([^/]+)/messages$")
ROUTE: Final = "/v1/sessions/{session}/messages"
_IDEMPOTENCY_MAX: Final = 255
# A text is at most 65,536 characters (4 bytes each in UTF-8 at worst), mentions and a
# contact card far less: no valid JSON send comes near this.
MAX_JSON_BODY: Final = 1024 * 1024
# Where `WappApi` leaves what `handles` found.
SCOPE_KEY: Final = "wapp.fast_send"
_JSON_HEADERS: Final = [(b"content-type", b"application/json")]


def _headers(scope: Scope) -> dict[bytes, bytes]:
    # The first value of a repeated header, as Starlette's `Headers.get` gives.
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        found.setdefault(name, value)
    return found


def _presented_key(headers: dict[bytes, bytes]) -> str | None:
    """`Authorization: Bearer <key>` first, else `X-Api-Key` (as HTTPBearer/APIKeyHeader)."""
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    if authorization and scheme and credentials and scheme.lower() == "bearer":
        return credentials
    return headers.get(b"x-api-key", b"").decode("latin-1") or None


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
    """(session reference, headers) when this request is a JSON send the fast path
    serves; the headers are read once, here, for the whole request."""
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


class FastSend:
    """Answers a request `handles` accepted; `app` is the FastAPI app whose state it uses."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_ref, headers = scope[SCOPE_KEY]
        # Request metrics count it under the route's template, as if the router had matched.
        scope[http_metrics.ROUTE_KEY] = ROUTE
        state: AppState = self.app.state.wapp
        try:
            body = await self._send(
                state, scope, receive, headers, session_ref, headers.get(b"idempotency-key")
            )
        except WappError as exc:
            await error_response(exc)(scope, receive, send)
            return
        except RequestValidationError as exc:
            await validation_response(exc)(scope, receive, send)
            return
        except ClientDisconnect:
            return
        except Exception as exc:
            # What the app's ServerErrorMiddleware and `_on_unexpected` would do.
            await unexpected_response(exc)(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _send(
        self,
        state: AppState,
        scope: Scope,
        receive: Receive,
        headers: dict[bytes, bytes],
        session_ref: str,
        idempotency: bytes | None,
    ) -> bytes:
        client = scope.get("client")
        address = client[0] if client else "unknown"
        principal = await auth.principal_for(state, address, _presented_key(headers))
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
            idempotency_key=idempotency.decode("latin-1") if idempotency is not None else None,
            batcher=state.sends,
        )
        return routes.accepted_json(accepted.message, row)
