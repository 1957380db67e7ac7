"""What the running api holds: built once in the lifespan, reached through dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from appliance.services.send_batcher import SendBatcher
from appliance.settings import Settings
from appliance.webhooks.runtime import WebhooksRuntime


@dataclass
class AppState:
    settings: Settings
    db: AsyncEngine
    redis: aioredis.Redis
    # Transactions that may write (SQLite: BEGIN IMMEDIATE) and read-only ones (DEFERRED).
    writer: async_sessionmaker[AsyncSession]
    reader: async_sessionmaker[AsyncSession]
    # Group commit for message sends; None: each send commits alone.
    sends: SendBatcher | None = None


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.wapp
    return state


async def _state_dependency(request: Request) -> AppState:
    # async on purpose: FastAPI runs a sync dependency in a worker thread, which would be
    # a thread hop on every request.
    return get_state(request)


StateDep = Annotated[AppState, Depends(_state_dependency)]


async def _webhooks_dependency(request: Request) -> WebhooksRuntime:
    # async for the same reason as `_state_dependency`.
    runtime: WebhooksRuntime = request.app.state.webhooks
    return runtime


WebhooksDep = Annotated[WebhooksRuntime, Depends(_webhooks_dependency)]
