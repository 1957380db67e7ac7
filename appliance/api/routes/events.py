"""Live events: Server-Sent Events at `/v1/events`, a WebSocket at `/v1/events/ws`.

Both filter by session and type, and resume from a stream id (`Last-Event-ID` or
`?since=`); without one they start at the newest event.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Annotated, get_args

import orjson
from fastapi import APIRouter, Header, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from appliance.api.auth import PrincipalDep
from appliance.api.schemas import ErrorResponse
from appliance.api.state import AppState, StateDep, get_state
from appliance.api.ws_auth import authenticate_ws
from appliance.auth.principal import Principal
from appliance.contracts import Event
from appliance.errors import NotFound, ValidationFailed, WappError
from appliance.events.live import Visibility, follow, latest_id
from appliance.events.public import public_event
from appliance.services import session_names

router = APIRouter(prefix="/v1", tags=["events"])

EVENT_TYPES = frozenset(
    get_args(cls.model_fields["type"].annotation)[0] for cls in get_args(get_args(Event)[0])
)
SSE_EXAMPLE = (
    "id: 1700000000000-0\nevent: message.status\n"
    'data: {"id": "...", "type": "message.status", "session": "sales-1", "data": {...}}\n\n'
)
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
# WebSocket close codes: policy violation for auth, 1008; bad request, 1003 is "unsupported".
WS_POLICY = 1008


async def _visibility(
    state: AppState, principal: Principal, sessions: list[str], types: list[str]
) -> Visibility:
    unknown = sorted(set(types) - EVENT_TYPES)
    if unknown:
        raise ValidationFailed(
            f"unknown event type {unknown[0]}", details={"known": sorted(EVENT_TYPES)}
        )
    engine_names = []
    # Names are per key (services/session_names); events carry engine names.
    async with state.reader() as db:
        for name in sessions:
            query = session_names.find(name, key_id=principal.key.id, is_admin=principal.is_admin)
            row = (await db.scalars(query)).first()
            if row is None:
                raise NotFound(f"no session {name}", details={"session": name})
            engine_names.append(row.name)
    return Visibility(
        reader=state.reader,
        key_id=principal.key.id,
        is_admin=principal.is_admin,
        sessions=frozenset(engine_names),
        types=frozenset(types),
    )


async def _start(state: AppState, resume: str | None) -> str:
    if resume is None:
        return await latest_id(state.redis)
    if not _STREAM_ID.match(resume):
        raise ValidationFailed("since / Last-Event-ID must be a stream id like 1700000000000-0")
    return resume


@router.get(
    "/events",
    summary="Live events (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"example": SSE_EXAMPLE}}},
        404: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)
async def sse(
    state: StateDep,
    principal: PrincipalDep,
    session: Annotated[list[str], Query(description="Only these sessions (repeatable).")] = [],  # noqa: B006
    type: Annotated[list[str], Query(description="Only these event types (repeatable).")] = [],  # noqa: B006
    since: Annotated[str | None, Query(description="Resume after this stream id.")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    visibility = await _visibility(state, principal, session, type)
    after = await _start(state, last_event_id or since)

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n: connected\n\n"
        async for item in follow(state.redis, visibility, after=after):
            if item is None:
                yield b": keep-alive\n\n"
                continue
            stream_id, event = item
            data = orjson.dumps(public_event(event, stream_id=stream_id))
            yield b"id: %s\nevent: %s\ndata: %s\n\n" % (
                stream_id.encode(),
                event.type.encode(),
                data,
            )

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.websocket("/events/ws")
async def websocket_events(websocket: WebSocket) -> None:
    """One JSON event per message. Query: `session`, `type` (repeatable), `since`, `apiKey`."""
    state = get_state(websocket)  # type: ignore[arg-type]
    params = websocket.query_params
    # "Now" is taken before the handshake completes: an event published as soon as the
    # client is connected must not fall before the starting point.
    now = await latest_id(state.redis)
    # Accept first: a close before accepting is only an HTTP 403 to the client, which
    # could not tell a bad key from a bad filter.
    await websocket.accept()
    try:
        principal = await authenticate_ws(websocket, state)
        visibility = await _visibility(
            state, principal, params.getlist("session"), params.getlist("type")
        )
        since = params.get("since")
        after = await _start(state, since) if since is not None else now
    except WappError as exc:
        await websocket.close(code=WS_POLICY, reason=f"{exc.code}: {exc.message}"[:120])
        return

    async def send_events() -> None:
        async for item in follow(state.redis, visibility, after=after, block_ms=5000):
            if item is not None:
                stream_id, event = item
                await websocket.send_bytes(orjson.dumps(public_event(event, stream_id=stream_id)))

    async def until_closed() -> None:
        # The client sends nothing; receiving is how a disconnect is noticed at once.
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.receive_bytes()

    sender = asyncio.create_task(send_events())
    closer = asyncio.create_task(until_closed())
    done, pending = await asyncio.wait({sender, closer}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
            await task
    for task in done:
        with contextlib.suppress(WebSocketDisconnect):
            task.result()
