"""What the running api holds: built once in the lifespan, reached through dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from appliance.settings import Settings


@dataclass
class AppState:
    settings: Settings
    db: AsyncEngine
    redis: aioredis.Redis
    # Transactions that may write (SQLite: BEGIN IMMEDIATE) and read-only ones (DEFERRED).
    writer: async_sessionmaker[AsyncSession]
    reader: async_sessionmaker[AsyncSession]


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.wapp
    return state


StateDep = Annotated[AppState, Depends(get_state)]
