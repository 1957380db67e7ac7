"""Authentication for WebSocket routes: the same keys, also accepted as `?apiKey=`.

Browsers cannot set headers on a WebSocket handshake, hence the query parameter. The
key is read, checked and throttled by `appliance.auth.presented.authenticate`, as on
every HTTP entry.
"""

from __future__ import annotations

from fastapi import WebSocket

from appliance.api.state import AppState
from appliance.auth import presented
from appliance.auth.principal import Principal


async def authenticate_ws(websocket: WebSocket, state: AppState) -> Principal:
    # The client's address as uvicorn gives it: forwarded headers count only from
    # `[api] trusted_proxies`.
    headers = websocket.headers
    return await presented.authenticate(
        state.reader,
        state.redis,
        state.settings.api,
        address=websocket.client.host if websocket.client else "unknown",
        authorization=headers.get("authorization"),
        api_key=headers.get("x-api-key"),
        query_key=websocket.query_params.get("apiKey"),
    )
