"""The JSON send, served below FastAPI's routing and dependency machinery.

`POST /v1/sessions/{session}/messages` with a JSON body is the api's hot path. Under
load, FastAPI's route matching (every route of every router is tried in turn) and its
per-request dependency solving cost more CPU than the send itself. This middleware
answers exactly that request with the same steps as the route, in the same order:
throttle and key (`auth.principal_for`), session (`sessions.get_cached`), body
(`routes.messages` body adapter), `messages.send`, the same 202 body; errors become the
same single-shape responses as the app's handlers give (unexpected ones propagate to
the app's handler for them). Anything else, a multipart send or an `Idempotency-Key`
FastAPI would refuse, goes on to the app untouched. The route stays the documented
(OpenAPI) one and serves multipart sends.

It sits inside `TraceMiddleware`, so the trace id and the one log line per request are
the same as on any route.
"""

from __future__ import annotations

import re
from typing import Final

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from appliance.api import auth
from appliance.api.errors import error_response, validation_response
from appliance.api.routes import messages as routes
from appliance.api.state import AppState
from appliance.errors import WappError
from appliance.services import messages, sessions

_PATH: Final = re.compile(r"^/v1/sessions/([^/]+)/messages$")
_IDEMPOTENCY_MAX: Final = 255
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
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class FastSendMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        match = _PATH.match(path)
        if match is None:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        idempotency = headers.get(b"idempotency-key")
        if headers.get(b"content-type", b"").startswith(b"multipart/form-data") or (
            idempotency is not None and not 0 < len(idempotency) <= _IDEMPOTENCY_MAX
        ):
            await self.app(scope, receive, send)
            return
        state: AppState = scope["app"].state.wapp
        try:
            body = await self._send(state, scope, receive, headers, match.group(1), idempotency)
        except WappError as exc:
            await error_response(exc)(scope, receive, send)
            return
        except RequestValidationError as exc:
            await validation_response(exc)(scope, receive, send)
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
        return routes.accepted_body(accepted.message, row).model_dump_json(by_alias=True).encode()
