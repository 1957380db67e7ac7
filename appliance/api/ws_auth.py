"""Authentication for WebSocket routes: the same keys, also accepted as `?apiKey=`.

Browsers cannot set headers on a WebSocket handshake, hence the query parameter.
"""

from __future__ import annotations

from fastapi import WebSocket

from appliance.api.auth import refused
from appliance.api.state import AppState
from appliance.auth import api_keys
from appliance.auth.principal import Principal
from appliance.errors import Unauthorized


async def authenticate_ws(websocket: WebSocket, state: AppState) -> Principal:
    # The client's address as uvicorn gives it: forwarded headers count only from
    # `[api] trusted_proxies`.
    address = websocket.client.host if websocket.client else "unknown"
    header = websocket.headers.get("authorization", "")
    presented = (
        (header[len("Bearer ") :] if header.startswith("Bearer ") else None)
        or websocket.headers.get("x-api-key")
        or websocket.query_params.get("apiKey")
    )
    # No key is no guess: 401, not counted.
    if not presented:
        raise Unauthorized(
            "missing API key: `Authorization: Bearer ...`, `X-Api-Key` or `?apiKey=`"
        )
    try:
        key = await api_keys.authenticate(state.reader, presented)
    except Unauthorized:
        await refused(state, address, presented)
        raise
    return Principal(key=key)
