"""What each api worker runs for the metrics: the request-count flush and the boot watch."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio as aioredis

from appliance.metrics.counters import BootWatch
from appliance.metrics.http import FLUSH_EVERY_S, RequestMetrics
from appliance.periodic import every
from appliance.readiness import expected_engines
from appliance.settings import Settings


@dataclass
class MetricsRuntime:
    redis: aioredis.Redis
    requests: RequestMetrics
    boots: BootWatch
    flusher: asyncio.Task[None]
    stopping: asyncio.Event

    @classmethod
    def start(
        cls, settings: Settings, redis: aioredis.Redis, requests: RequestMetrics
    ) -> MetricsRuntime:
        boots = BootWatch(
            redis, expected_engines(settings), interval_s=settings.engine.heartbeat_interval_s
        )
        boots.start()
        stopping = asyncio.Event()
        flusher = asyncio.create_task(
            every(FLUSH_EVERY_S, stopping, lambda: requests.flush(redis)),
            name="wapp-metrics-flush",
        )
        return cls(redis, requests, boots, flusher, stopping)

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.gather(self.flusher, return_exceptions=True)
        await self.boots.stop()
        # The last requests of this worker still count (Redis is closed after this).
        await self.requests.flush(self.redis)
