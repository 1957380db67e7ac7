"""Reading a request's API key: the one function every entry uses.

The REST dependency (appliance/api/auth.py), the JSON send (appliance/api/fast_send.py),
`GET /metrics` and the WebSocket (appliance/api/ws_auth.py) all hand the raw values they
were given to `authenticate`, so a key is parsed, looked up and throttled the same way
whichever door it comes through, and every refusal is the same error.

Where a key may be:

- `Authorization: Bearer <key>`; the scheme is case-insensitive (RFC 9110 section 11.1),
  so `bearer` and `BEARER` are the same;
- else `X-Api-Key: <key>`;
- else, on a WebSocket only, `?apiKey=<key>`: browsers cannot set headers on a
  handshake. HTTP requests never pass it, so a key is not invited into URLs (and proxy
  logs) where a header serves.

An `Authorization` header of another scheme (`Basic ...`) or without credentials is
not a key: the next place is looked at, and with none the request has no key.
"""

from __future__ import annotations

from typing import Final

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.auth import api_keys, throttle
from appliance.auth.principal import Principal
from appliance.errors import Unauthorized
from appliance.settings import ApiSettings

MISSING: Final = (
    "missing API key: send `Authorization: Bearer wapp_...` or `X-Api-Key` "
    "(a WebSocket may also pass `?apiKey=`)"
)


def presented_key(
    authorization: str | None, api_key: str | None, query_key: str | None = None
) -> str | None:
    """The key a request presents (the module's rules), or None."""
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if credentials and scheme.lower() == "bearer":
            return credentials
    return api_key or query_key or None


async def authenticate(
    reader: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
    limits: ApiSettings,
    *,
    address: str,
    authorization: str | None,
    api_key: str | None,
    query_key: str | None = None,
) -> Principal:
    """Who presents this key, from the raw header (and query) values and the client's
    address; else Unauthorized (401), or RateLimited (429) once this address has
    presented too many bad keys.

    The key is checked first and the throttle only counts refusals, so a valid key is
    never refused for others' failures (appliance/auth/throttle.py). No key at all is
    not a guess: 401, not counted.
    """
    presented = presented_key(authorization, api_key, query_key)
    if presented is None:
        raise Unauthorized(MISSING)
    try:
        key = await api_keys.authenticate(reader, presented)
    except Unauthorized:
        await throttle.record_failure(
            redis,
            address,
            presented,
            limit=limits.auth_failure_limit,
            window_s=limits.auth_failure_window_s,
        )
        raise
    return Principal(key=key)
