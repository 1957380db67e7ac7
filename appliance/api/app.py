"""`create_app(settings)`: the FastAPI application, built from Settings passed in."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from appliance.api.errors import install_error_handlers
from appliance.api.fast_send import FastSendMiddleware
from appliance.api.middleware import TraceMiddleware
from appliance.api.routes import events, health, keys, media, messages, sandbox, sessions, webhooks
from appliance.api.state import AppState
from appliance.db.engine import create_db_engine, create_sessionmaker, create_writer_engine
from appliance.events.consumer import EventConsumer
from appliance.redis_client import create_redis
from appliance.services import commands
from appliance.services.send_batcher import SendBatcher
from appliance.settings import Settings
from appliance.webhooks.runtime import WebhooksRuntime

DESCRIPTION = """
wapp drives many WhatsApp numbers ("sessions") from one small box.

Every error has one shape:
`{"success": false, "error": {"code": "UPPER_SNAKE", "message": "...", "details": {}}}`.
JSON bodies are camelCase.
"""


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
        state.sends = SendBatcher(state.writer, redis, stream_maxlen=commands.STREAM_MAXLEN)
        state.sends.start()
        app.state.wapp = state
        consumer = EventConsumer(redis=redis, writer=state.writer)
        consumer.start()
        app.state.webhooks = WebhooksRuntime.start(state)
        # What startup built lives as long as the process: keep it out of the collector's
        # full passes, which otherwise walk it all and stall every request under load.
        gc.freeze()
        try:
            yield
        finally:
            await app.state.webhooks.stop()
            await consumer.stop()
            await state.sends.stop()
            await redis.aclose()
            if writer_db is not db:
                await writer_db.dispose()
            await db.dispose()

    app = FastAPI(
        title="wapp",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    install_error_handlers(app)
    # Added first, so it runs inside TraceMiddleware (trace id, the request's log line).
    app.add_middleware(FastSendMiddleware)
    app.add_middleware(TraceMiddleware)
    app.include_router(health.router)
    app.include_router(keys.router)
    app.include_router(events.router)
    app.include_router(sessions.router)
    app.include_router(messages.router)
    app.include_router(media.router)
    app.include_router(sandbox.router)
    app.include_router(webhooks.router)
    return app
