"""Structured JSON logs on stdout (journald/supervisor keep them), with a trace id.

The trace id lives in a contextvar: set once per API request (or taken from the
command/event being handled) and stamped on every line logged while it is current, so
one message can be followed from the API to the engine and back.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

import orjson

from appliance import ids

trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)
# The unexpected exceptions a request's error handlers answered with a 500: the request's
# one log line carries their stack (set by TraceMiddleware, filled by `note_unexpected`).
_request_failures: ContextVar[list[BaseException] | None] = ContextVar(
    "request_failures", default=None
)

# uvicorn adds a `color_message` twin of the message to some records.
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


def new_trace_id() -> str:
    return ids.hex_id()


def begin_request() -> tuple[list[BaseException], Token[list[BaseException] | None]]:
    """Start collecting the current request's unexpected exceptions (TraceMiddleware)."""
    failures: list[BaseException] = []
    return failures, _request_failures.set(failures)


def end_request(token: Token[list[BaseException] | None]) -> None:
    _request_failures.reset(token)


def note_unexpected(exc: BaseException) -> bool:
    """Hand an unexpected exception to the current request's log line. False outside a
    request: the caller logs it itself."""
    failures = _request_failures.get()
    if failures is None:
        return False
    failures.append(exc)
    return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace_id = trace_id_var.get()
        if trace_id is not None:
            entry["trace_id"] = trace_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, service: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access log duplicates our request log line; its errors still flow.
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
