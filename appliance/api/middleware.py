"""Per-request trace id (from `X-Trace-Id` or new) and one structured log line per request."""

from __future__ import annotations

import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.logs import new_trace_id, trace_id_var

log = logging.getLogger("appliance.api.request")
_VALID_TRACE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class TraceMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
        started = time.perf_counter()
        status = 500

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-trace-id", trace_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            if log.isEnabledFor(logging.INFO):  # skip building the line when it is dropped
                log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
            trace_id_var.reset(token)
