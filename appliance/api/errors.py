"""The one place errors become HTTP responses, all in the single error shape.

Services raise `WappError`s; FastAPI's own 404/405/422 and anything unexpected are
converted here too, so a client never sees another body.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic.alias_generators import to_camel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from appliance.errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    RedisUnavailable,
    Unauthorized,
    ValidationFailed,
    WappError,
)
from appliance.logs import note_unexpected

log = logging.getLogger("appliance.api")

_BY_STATUS: dict[int, type[WappError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    422: ValidationFailed,
}


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: WappError) -> OrjsonResponse:
    headers = {}
    if isinstance(exc, RateLimited | RedisUnavailable):
        headers["Retry-After"] = str(exc.retry_after_s)
    return OrjsonResponse(exc.to_body(), status_code=exc.status, headers=headers)


def _field_path(loc: tuple[Any, ...]) -> str:
    # ("body", "pairing_phone") -> "body.pairingPhone": the client sent camelCase.
    return ".".join(to_camel(str(part)) if isinstance(part, str) else str(part) for part in loc)


def _validation_details(exc: RequestValidationError) -> list[dict[str, str]]:
    return [
        {"field": _field_path(tuple(err.get("loc", ()))), "message": str(err.get("msg", ""))}
        for err in exc.errors()
    ]


async def _on_wapp_error(_: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, WappError)
    return error_response(exc)


async def _on_validation_error(_: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_response(exc)


def validation_response(exc: RequestValidationError) -> OrjsonResponse:
    fields = _validation_details(exc)
    first = fields[0] if fields else {"field": "request", "message": "invalid"}
    return error_response(
        ValidationFailed(f"{first['field']}: {first['message']}", details={"fields": fields})
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's own `Allow` names only
    the first route whose path matched, and one path often has several routes (GET and
    POST /v1/sessions are two); asking the routes, method by method, is exact."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


async def _on_http_error(request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, StarletteHTTPException)
    cls = _BY_STATUS.get(exc.status_code)
    if exc.status_code == 404:
        return error_response(NotFound(f"no route {request.method} {request.url.path}"))
    if exc.status_code == 405:
        # RFC 9110: a 405 names the methods the resource does serve.
        allowed = _allowed_methods(request)
        response = error_response(
            MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path}",
                details={"allow": allowed},
            )
        )
        response.headers["Allow"] = ", ".join(allowed)
        return response
    if cls is not None:
        return error_response(cls(str(exc.detail)))
    body = WappError(str(exc.detail)).to_body()
    body["error"]["code"] = "HTTP_ERROR"
    return OrjsonResponse(body, status_code=exc.status_code)


async def _on_unexpected(_: Request, exc: Exception) -> OrjsonResponse:
    return unexpected_response(exc)


def unexpected_response(exc: Exception) -> OrjsonResponse:
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        # Redis restarting (refused, or loading its AOF) is retryable, not an internal error.
        log.warning("redis unavailable", exc_info=exc)
        return error_response(RedisUnavailable("Redis is unavailable; retry shortly"))
    # Inside a request, its one log line carries the stack (TraceMiddleware).
    if not note_unexpected(exc):
        log.exception("unhandled error", exc_info=exc)
    return error_response(WappError("internal error; see the api log for this trace id"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(WappError, _on_wapp_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
