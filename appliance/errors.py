"""The one error hierarchy of the appliance.

Services raise these, never `HTTPException`. `api/errors.py` maps them once to the
single HTTP error shape, `cli/main.py` maps them once to exit codes. `retryable` is a
property of the error, which is how callers (webhook retries, command retries) decide.
"""

from __future__ import annotations

from typing import Any, ClassVar

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3


class WappError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"
    exit_code: ClassVar[int] = EXIT_FAILURE
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_body(self) -> dict[str, Any]:
        return {
            "success": False,
            "error": {"code": self.code, "message": self.message, "details": self.details},
        }


class BadRequest(WappError):
    status = 400
    code = "BAD_REQUEST"
    exit_code = EXIT_USAGE


class ValidationFailed(WappError):
    status = 422
    code = "VALIDATION_ERROR"
    exit_code = EXIT_USAGE


class Unauthorized(WappError):
    status = 401
    code = "UNAUTHORIZED"


class Forbidden(WappError):
    status = 403
    code = "FORBIDDEN"


class NotFound(WappError):
    status = 404
    code = "NOT_FOUND"


class MethodNotAllowed(WappError):
    status = 405
    code = "METHOD_NOT_ALLOWED"
    exit_code = EXIT_USAGE


class PayloadTooLarge(WappError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"
    exit_code = EXIT_USAGE


class Conflict(WappError):
    status = 409
    code = "CONFLICT"


class RateLimited(WappError):
    status = 429
    code = "RATE_LIMITED"
    retryable = True

    def __init__(
        self, message: str, *, retry_after_s: int, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details={"retryAfterS": retry_after_s, **(details or {})})
        self.retry_after_s = retry_after_s


class ServiceUnavailable(WappError):
    status = 503
    code = "SERVICE_UNAVAILABLE"
    retryable = True


class RedisUnavailable(ServiceUnavailable):
    """Redis refused or dropped the connection (a restart takes about a second): the
    request can be retried as it is, after `retry_after_s` (answered as `Retry-After`)."""

    code = "REDIS_UNAVAILABLE"

    def __init__(
        self, message: str, *, retry_after_s: int = 1, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(
            message, details={"retryable": True, "retryAfterS": retry_after_s, **(details or {})}
        )
        self.retry_after_s = retry_after_s


class EnqueueFailed(RedisUnavailable):
    """A send's row is committed but its command could not be put into Redis. The id in
    `details.messageId` is real: the api's requeue sweep enqueues the row once Redis is
    back, and a retry with the same Idempotency-Key answers 202 with that id."""

    code = "ENQUEUE_FAILED"


class ConfigError(WappError):
    """Invalid or unreadable configuration: the CLI exits 3 naming the field and the file."""

    code = "CONFIG_ERROR"
    exit_code = EXIT_CONFIG


class UsageError(WappError):
    status = 400
    code = "USAGE_ERROR"
    exit_code = EXIT_USAGE


class CommandFailed(WappError):
    """An external program we drive (supervisord, redis-server, node) failed."""

    code = "COMMAND_FAILED"
