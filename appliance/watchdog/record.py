"""Every watchdog action as an event in Redis: `wapp:watchdog:events` (a capped stream).

The api's engine restart monitor (webhooks/engine_restarts.py) reads the `engine.recycled`
event whose `old_pid` is the boot it saw end, and puts its reason and figures into the
`engine.recycled` admin alert. A restarted watchdog reads the last hour back, so its
cooldown and hourly limit survive it. `wapp watchdog events` prints them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field

from appliance import redis_keys
from appliance.contracts import Upstream

EVENTS_STREAM: Final = redis_keys.WATCHDOG_EVENTS_STREAM
# Kept approximately: enough for weeks of actions, never a memory concern.
EVENTS_MAXLEN: Final = 1000
# The newest sample of every program, for `wapp watchdog status`; expires with the watchdog.
SAMPLE_KEY: Final = redis_keys.WATCHDOG_SAMPLE_KEY

EventType = Literal["engine.recycled", "api.recycled", "recycle.blocked", "redis.memory_high"]
PROGRAM_UPSTREAM: Final[dict[str, Upstream]] = {"engine": "whatsapp", "engine-sandbox": "sandbox"}


class WatchdogEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: EventType
    program: str
    upstream: Upstream | None = None
    # memory | heartbeat_stale | loop_lag (recycles, blocks), redis_memory (Redis).
    reason: str
    figures: dict[str, Any]
    # The recycled process: the boot the api's monitor sees end.
    old_pid: int | None = None
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # recycle.blocked: cooldown | hourly_limit.
    blocked_by: str | None = None

    def summary(self) -> str:
        figures = self.figures
        if self.reason == "memory":
            why = f"RSS {figures.get('rss_mb')} MB over {figures.get('rss_limit_mb')} MB"
        elif self.reason == "heartbeat_stale":
            why = f"no heartbeat for {figures.get('heartbeat_age_s')} s"
        elif self.reason == "loop_lag":
            why = f"event-loop lag {figures.get('loop_lag_ms')} ms"
        else:
            why = f"used {figures.get('used_mb')} MB of {figures.get('max_mb')} MB"
        return f"{self.reason}: {why}"


async def record(redis: aioredis.Redis, event: WatchdogEvent) -> None:
    await redis.xadd(
        EVENTS_STREAM,
        {"data": event.model_dump_json()},
        maxlen=EVENTS_MAXLEN,
        approximate=True,
    )


def _parse(entries: Any) -> list[WatchdogEvent]:
    events = []
    for _, fields in entries:
        raw = fields.get(b"data") or fields.get("data")
        if raw is not None:
            events.append(WatchdogEvent.model_validate(orjson.loads(raw)))
    return events


async def since(redis: aioredis.Redis, start: datetime) -> list[WatchdogEvent]:
    """The events recorded at or after `start`, oldest first."""
    first_id = f"{int(start.timestamp() * 1000)}-0"
    return _parse(await redis.xrange(EVENTS_STREAM, min=first_id, max="+"))


async def latest(redis: aioredis.Redis, count: int) -> list[WatchdogEvent]:
    """The newest `count` events, oldest first."""
    return list(reversed(_parse(await redis.xrevrange(EVENTS_STREAM, count=count))))


async def recycle_of(
    redis: aioredis.Redis, upstream: Upstream, old_pid: int
) -> WatchdogEvent | None:
    """The watchdog's recycle of the engine boot with pid `old_pid`, if it did one."""
    for event in reversed(await latest(redis, 50)):
        mine = event.type == "engine.recycled" and event.upstream == upstream
        if mine and event.old_pid == old_pid:
            return event
    return None
