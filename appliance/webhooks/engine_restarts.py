"""Engine restarts, seen by the api through the heartbeat, sent as the `engine.recycled` alert.

Each engine re-writes its heartbeat (pid, started_at, rss, ...) every
`engine.heartbeat_interval_s` with a TTL. A monitor in every api worker reads the heartbeat
of each engine the stack runs (`readiness.expected_engines`) as often.
The first heartbeat a worker sees is only remembered, so starting the stack or the api
alerts nothing. A later heartbeat of another boot (a different pid or started_at) means
the engine restarted: supervisord after a crash or a kill, `wapp restart engine`, or the
watchdog recycling it (the alert then carries the watchdog's reason and figures, from its
`engine.recycled` event: watchdog/record.py). A missing heartbeat alone is no alert
(`/readyz` reports that); the remembered boot stays until a heartbeat comes back, then it
is compared as usual.

Several workers watch the same engines: `SET wapp:alert:engine-boot:{upstream}:{pid}:
{started_at} NX EX 86400` elects the one worker that alerts for a new boot, and the
Alerter's per-subject rate limit (`engine:{upstream}`) applies on top of that, so an
engine restarting in a loop sends one alert per `alert_min_interval_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import redis.asyncio as aioredis

from appliance import redis_keys
from appliance.contracts import EngineHeartbeat, Upstream
from appliance.periodic import every
from appliance.services.commands import heartbeat
from appliance.watchdog.record import WatchdogEvent, recycle_of
from appliance.webhooks.alerts import Alert, Alerter

log = logging.getLogger("appliance.webhooks.engine_restarts")

BOOT_CLAIM_TTL_S = 86400


def boot_claim_key(beat: EngineHeartbeat) -> str:
    """Whoever sets this first (NX) alerts for this boot of the engine."""
    return redis_keys.engine_boot_alert_key(beat.upstream, beat.pid, beat.started_at.isoformat())


def same_boot(a: EngineHeartbeat, b: EngineHeartbeat) -> bool:
    return a.pid == b.pid and a.started_at == b.started_at


def engine_restart_alert(
    old: EngineHeartbeat, new: EngineHeartbeat, recycle: WatchdogEvent | None = None
) -> Alert:
    """The `engine.recycled` alert: `old` is the last heartbeat seen of the previous boot;
    `recycle` the watchdog's event when the watchdog did it (its reason and figures)."""
    upstream = new.upstream
    how = f"recycled by the watchdog ({recycle.summary()})" if recycle else "restarted"
    watchdog = {"reason": recycle.reason, "figures": recycle.figures} if recycle else {}
    return Alert(
        kind="engine.recycled",
        subject=f"engine:{upstream}",
        message=f"engine ({upstream}) {how}: pid {old.pid} -> {new.pid}",
        at=new.started_at,
        details={
            **watchdog,
            "upstream": upstream,
            "oldPid": old.pid,
            "newPid": new.pid,
            "oldStartedAt": old.started_at.isoformat(),
            "newStartedAt": new.started_at.isoformat(),
            # From the old process's last heartbeat seen: at most one interval stale.
            "oldRssMb": round(old.rss_bytes / (1024 * 1024), 1),
            "oldUptimeS": round(old.uptime_s, 1),
        },
    )


class EngineRestartMonitor:
    """Polls the engines' heartbeats every `poll_s` and alerts once per engine restart."""

    def __init__(
        self,
        alerter: Alerter,
        redis: aioredis.Redis,
        upstreams: Sequence[Upstream],
        *,
        poll_s: float = 2.0,
    ) -> None:
        self.alerter = alerter
        self.redis = redis
        self.upstreams = tuple(upstreams)
        self.poll_s = poll_s
        self._seen: dict[Upstream, EngineHeartbeat] = {}
        self._failing: set[Upstream] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        if self.alerter.configured and self._task is None:
            self._task = asyncio.create_task(self._run(), name="wapp-engine-restarts")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        await every(self.poll_s, self._stopping, self.poll)

    async def poll(self) -> int:
        """Check every engine once; how many alerts were sent. Never raises."""
        sent = 0
        for upstream in self.upstreams:
            try:
                sent += await self.check(upstream)
            except Exception as exc:  # Redis down, an unreadable heartbeat: try again later
                if upstream not in self._failing:
                    self._failing.add(upstream)
                    log.warning(
                        "engine restart monitor (%s): %s: %s", upstream, type(exc).__name__, exc
                    )
                continue
            if upstream in self._failing:
                self._failing.discard(upstream)
                log.info("engine restart monitor (%s): heartbeat readable again", upstream)
        return sent

    async def check(self, upstream: Upstream) -> int:
        """Compare the engine's heartbeat with the one remembered; 1 when an alert went out."""
        beat = await heartbeat(self.redis, upstream)
        if beat is None:
            return 0
        seen = self._seen.get(upstream)
        if seen is None or same_boot(seen, beat):
            self._seen[upstream] = beat
            return 0
        # Claimed before the boot is remembered: a Redis error here retries at the next poll.
        won = bool(await self.redis.set(boot_claim_key(beat), "1", nx=True, ex=BOOT_CLAIM_TTL_S))
        self._seen[upstream] = beat
        log.warning(
            "engine (%s) restarted: pid %s -> %s (started %s)",
            upstream,
            seen.pid,
            beat.pid,
            beat.started_at.isoformat(),
        )
        if not won:
            return 0
        recycle = await recycle_of(self.redis, upstream, seen.pid)
        return await self.alerter.alert(engine_restart_alert(seen, beat, recycle))
