"""`create_app(settings)`: the FastAPI application, built from Settings passed in."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from appliance.api import fast_send
from appliance.api.errors import install_error_handlers
from appliance.api.middleware import TraceMiddleware
from appliance.api.routes import (
    events,
    health,
    keys,
    media,
    messages,
    metrics,
    sandbox,
    sessions,
    webhooks,
)
from appliance.api.state import AppState
from appliance.db.checkpoints import WalCheckpoints
from appliance.db.engine import (
    create_db_engine,
    create_sessionmaker,
    create_writer_engine,
    is_sqlite,
)
from appliance.events.consumer import EventConsumer
from appliance.metrics.http import RequestMetrics
from appliance.metrics.runtime import MetricsRuntime
from appliance.redis_client import create_redis
from appliance.services import commands, session_cache
from appliance.services.requeue import Requeuer
from appliance.services.send_batcher import SendBatcher
from appliance.settings import Settings
from appliance.webhooks.runtime import WebhooksRuntime

DESCRIPTION = """
wapp drives many WhatsApp numbers ("sessions") from one small box.

Every error has one shape:
`{"success": false, "error": {"code": "UPPER_SNAKE", "message": "...", "details": {}}}`.
JSON bodies are camelCase.
"""


class WappApi(FastAPI):
    """FastAPI, inside `TraceMiddleware`, with the JSON send answered at the router's entry
    (`fast_send.SendEntry`): every middleware of the app wraps it as it wraps any route."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # This worker's request counts (metrics/http.py), the JSON send's included.
        self.state.request_metrics = self.request_metrics = RequestMetrics()
        # Outermost, around ServerErrorMiddleware too: a 500 carries X-Trace-Id as well.
        self.traced = TraceMiddleware(super().__call__, observe=self.request_metrics.observe)
        # The router's stack is what the app's middleware stack ends in (Starlette builds
        # it around `self.router`), so the JSON send is below all of it, added or not.
        self.router.middleware_stack = fast_send.SendEntry(self.router.middleware_stack, self.state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.traced(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = create_db_engine(settings)
        writer_db = create_writer_engine(settings, db)
        redis = create_redis(settings)
        state = AppState(
            settings=settings,
            db=db,
            redis=redis,
            writer=create_sessionmaker(writer_db),
            reader=create_sessionmaker(db, read_only=True),
        )
        # Committed sends whose commands never reached Redis are enqueued by this sweep:
        # at start (an api that died between commit and XADD), soon after a failed XADD
        # (`soon`), and periodically.
        requeuer = Requeuer(state.reader, redis)
        state.sends = SendBatcher(
            writer_db,
            redis,
            stream_maxlen=commands.STREAM_MAXLEN,
            on_enqueue_failed=requeuer.soon,
        )
        state.sends.start()
        session_cache.watch_changes()  # the send path's session rows, emptied on changes
        requeuer.start()
        checkpoints = WalCheckpoints(db) if is_sqlite(db) else None
        if checkpoints is not None:
            checkpoints.start()
        app.state.wapp = state
        app.state.webhooks = WebhooksRuntime.start(
            settings, writer=state.writer, reader=state.reader, redis=redis
        )
        metrics_runtime = MetricsRuntime.start(settings, redis, app.state.request_metrics)
        # The consumer raises admin alerts (version refusals) through the runtime's alerter.
        consumer = EventConsumer(
            redis=redis, writer=state.writer, alerter=app.state.webhooks.alerter
        )
        consumer.start()
        # What startup built lives as long as the process: keep it out of the collector's
        # full passes, which otherwise walk it all and stall every request under load.
        gc.freeze()
        try:
            yield
        finally:
            await consumer.stop()
            await metrics_runtime.stop()
            await app.state.webhooks.stop()
            await requeuer.stop()
            await state.sends.stop()
            if checkpoints is not None:
                await checkpoints.stop()
            await redis.aclose()
            if writer_db is not db:
                await writer_db.dispose()
            await db.dispose()

    app = WappApi(
        title="wapp",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(keys.router)
    app.include_router(events.router)
    app.include_router(sessions.router)
    app.include_router(messages.router)
    app.include_router(media.router)
    app.include_router(sandbox.router)
    app.include_router(webhooks.router)
    app.include_router(metrics.router)
    return app
