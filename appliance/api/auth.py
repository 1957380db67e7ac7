"""Who is calling: `Authorization: Bearer wapp_...` or `X-Api-Key: wapp_...`.

Admins see everything; a tenant sees only what its key owns, and another tenant's ids
answer 404 (not 403) so ids cannot be probed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from appliance.api.state import AppState, StateDep
from appliance.auth import api_keys, throttle
from appliance.auth.principal import Principal
from appliance.errors import Forbidden, Unauthorized

# Declared for OpenAPI (the "Authorize" button); parsing stays ours so errors keep our shape.
_bearer = HTTPBearer(auto_error=False, description="`Bearer wapp_<id>_<secret>`")
_header = APIKeyHeader(name="X-Api-Key", auto_error=False)


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def authenticate(
    request: Request,
    state: StateDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_header)],
) -> Principal:
    presented = bearer.credentials if bearer is not None else header_key
    return await principal_for(state, _client_address(request), presented)


async def principal_for(state: AppState, address: str, presented: str | None) -> Principal:
    """The key, then (only for a refused one) the throttle: what `authenticate` does once
    the headers are read. A valid key is never refused for others' failures."""
    # No key is no guess: 401, not counted.
    if not presented:
        raise Unauthorized("missing API key: send `Authorization: Bearer wapp_...` or `X-Api-Key`")
    try:
        key = await api_keys.authenticate(state.reader, presented)
    except Unauthorized:
        await refused(state, address, presented)
        raise
    return Principal(key=key)


async def refused(state: AppState, address: str, presented: str | None) -> None:
    """Count a refused key; RateLimited (429) instead of the 401 once over the limits."""
    limits = state.settings.api
    await throttle.record_failure(
        state.redis,
        address,
        presented,
        limit=limits.auth_failure_limit,
        window_s=limits.auth_failure_window_s,
    )


async def require_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this needs an admin API key")
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
AdminDep = Annotated[Principal, Depends(require_admin)]
