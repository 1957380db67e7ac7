"""Per-request trace id (from `X-Trace-Id` or new) and one structured log line per request.

`TraceMiddleware` wraps the whole app, outside Starlette's ServerErrorMiddleware and the
fast send path, so every answer carries `X-Trace-Id` (a 500 included) and the trace id is
current while the error handlers log. A 5xx line carries the stack of what caused it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.errors import WappError
from appliance.logs import begin_request, end_request, new_trace_id, trace_id_var

log = logging.getLogger("appliance.api.request")
_VALID_TRACE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_INTERNAL = "internal error; see the api log for this trace id"


# Called once per answered request with its scope, status and seconds (request metrics).
Observe = Callable[[Scope, int, float], None]


class TraceMiddleware:
    def __init__(self, app: ASGIApp, observe: Observe | None = None) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope["headers"]:
            if name == b"x-trace-id":
                incoming = value.decode("latin-1")
        trace_id = incoming if incoming and _VALID_TRACE.match(incoming) else new_trace_id()
        token = trace_id_var.set(trace_id)
        failures, failures_token = begin_request()
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_trace(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-trace-id", trace_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        except Exception as exc:
            # ServerErrorMiddleware re-raises after answering 500 so that a server can log
            # it; this line is that log, with the trace id, so uvicorn need not log it again
            # (without one).
            if exc not in failures:
                failures.append(exc)
            if not response_started:
                await _answer_500(send_with_trace)
        finally:
            self._log(scope, status, started, failures)
            if self.observe is not None:
                self.observe(scope, status, time.perf_counter() - started)
            end_request(failures_token)
            trace_id_var.reset(token)

    @staticmethod
    def _log(scope: Scope, status: int, started: float, failures: list[BaseException]) -> None:
        level = logging.ERROR if status >= 500 else logging.INFO
        if not log.isEnabledFor(level):  # skip building the line when it is dropped
            return
        log.log(
            level,
            "request",
            extra={
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            },
            exc_info=failures[0] if failures and status >= 500 else None,
        )


async def _answer_500(send: Send) -> None:
    body = orjson.dumps(WappError(_INTERNAL).to_body())
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
