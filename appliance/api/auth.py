"""Who is calling: `Authorization: Bearer wapp_...` or `X-Api-Key: wapp_...`.

Admins see everything; a tenant sees only what its key owns, and another tenant's ids
answer 404 (not 403) so ids cannot be probed. The key is read, checked and throttled by
`appliance.auth.presented.authenticate`, as on every other entry (the JSON send, the
WebSocket).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.requests import HTTPConnection

from appliance.api.state import AppState, StateDep
from appliance.auth import presented
from appliance.auth.principal import Principal
from appliance.errors import Forbidden


class _BearerScheme(HTTPBearer):
    """The bearer scheme as OpenAPI shows it (the docs' "Authorize" button). It parses
    nothing: `presented` reads the header, so there is one rule and one error shape."""

    async def __call__(self, request: HTTPConnection) -> None:
        return None


class _HeaderScheme(APIKeyHeader):
    """`X-Api-Key` for OpenAPI only, as `_BearerScheme`."""

    async def __call__(self, request: HTTPConnection) -> None:
        return None


# The scheme names OpenAPI has always shown.
_bearer = _BearerScheme(
    scheme_name="HTTPBearer", auto_error=False, description="`Bearer wapp_<id>_<secret>`"
)
_header = _HeaderScheme(name="X-Api-Key", scheme_name="APIKeyHeader", auto_error=False)


async def principal_of(state: AppState, request: Request) -> Principal:
    """The caller of an HTTP request (`presented.authenticate` on its headers)."""
    # The client's address as uvicorn gives it: forwarded headers count only from
    # `[api] trusted_proxies`.
    headers = request.headers
    return await presented.authenticate(
        state.reader,
        state.redis,
        state.settings.api,
        address=request.client.host if request.client else "unknown",
        authorization=headers.get("authorization"),
        api_key=headers.get("x-api-key"),
    )


async def authenticate(
    request: Request,
    state: StateDep,
    _bearer_scheme: Annotated[None, Depends(_bearer)],
    _header_scheme: Annotated[None, Depends(_header)],
) -> Principal:
    return await principal_of(state, request)


async def require_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this needs an admin API key")
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
AdminDep = Annotated[Principal, Depends(require_admin)]
