"""Authentication for WebSocket routes: the same keys, also accepted as `?apiKey=`.

Browsers cannot set headers on a WebSocket handshake, hence the query parameter.
"""

from __future__ import annotations

from fastapi import WebSocket

from appliance.api.auth import Principal
from appliance.api.state import AppState
from appliance.auth import api_keys, throttle
from appliance.errors import Unauthorized


async def authenticate_ws(websocket: WebSocket, state: AppState) -> Principal:
    address = websocket.client.host if websocket.client else "unknown"
    limits = state.settings.api
    await throttle.ensure_not_blocked(state.redis, address, limit=limits.auth_failure_limit)
    header = websocket.headers.get("authorization", "")
    presented = (
        (header[len("Bearer ") :] if header.startswith("Bearer ") else None)
        or websocket.headers.get("x-api-key")
        or websocket.query_params.get("apiKey")
    )
    if not presented:
        raise Unauthorized(
            "missing API key: `Authorization: Bearer ...`, `X-Api-Key` or `?apiKey=`"
        )
    try:
        key = await api_keys.authenticate(state.reader, presented)
    except Unauthorized:
        await throttle.record_failure(state.redis, address, window_s=limits.auth_failure_window_s)
        raise
    return Principal(key=key)
