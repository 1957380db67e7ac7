"""The watchdog's loop: sample every `interval_s`, decide, act through supervisord.

A recycle is supervisord's stopProcess then startProcess over its XML-RPC socket: the
stop is SIGTERM, on which an engine drains (no new commands, the batch in hand and the
sends in flight finished, sockets closed without logging out, auth writes flushed); the
start restores its sessions from their stored auth, `max_concurrent_handshakes` at a
time, without QR. Queued work waits in Redis meanwhile, so nothing is lost. Every action
is an event (record.py), a JSON log line and an admin alert: the `engine.recycled` alert
comes from the api's restart monitor (it sees the new boot and adds our reason); the api's
own recycle, blocked recycles and Redis memory are alerted from here.
"""

from __future__ import annotations

import asyncio
import logging
import time
import xmlrpc.client
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from appliance.contracts import EngineHeartbeat
from appliance.periodic import every
from appliance.redis_keys import engine_heartbeat_key
from appliance.settings import Settings
from appliance.stack.layout import StackLayout
from appliance.stack.rpc import RUNNING, Supervisor, connect
from appliance.watchdog import record
from appliance.watchdog.measure import MB, TreeSampler, redis_memory
from appliance.watchdog.policy import Kind, Observation, Policy, Verdict
from appliance.watchdog.record import PROGRAM_UPSTREAM, WatchdogEvent
from appliance.webhooks.alerts import Alert, Alerter

log = logging.getLogger("appliance.watchdog")

# supervisord's XML-RPC fault codes (supervisor.xmlrpc.Faults).
_NOT_RUNNING = 70
_ALREADY_STARTED = 60


class Watchdog:
    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        *,
        alerter: Alerter | None = None,
        layout: StackLayout | None = None,
    ) -> None:
        self.settings = settings
        self.s = settings.watchdog
        self.redis = redis
        self.alerter = alerter
        self.layout = layout or StackLayout.of(settings)
        self.policy = Policy(self.s)
        self.sampler = TreeSampler()
        self._supervisor: Supervisor | None = None
        self._redis_high = False
        self._failing = False

    async def load_history(self) -> int:
        """Count the recycles of the last hour again (a restarted watchdog keeps its limits)."""
        start = datetime.fromtimestamp(time.time() - 3600, UTC)
        events = await record.since(self.redis, start)
        recycles = [e for e in events if e.type in ("engine.recycled", "api.recycled")]
        for event in recycles:
            self.policy.recycled(event.program, event.at.timestamp())
        return len(recycles)

    async def run(self, stopping: asyncio.Event) -> None:
        await self.load_history()
        log.info("watchdog started", extra={"interval_s": self.s.interval_s})
        await every(self.s.interval_s, stopping, self._tick_logged)
        self.close()

    def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.close()
            self._supervisor = None

    async def _tick_logged(self) -> None:
        try:
            await self.tick()
        except Exception as exc:  # supervisord or Redis away for a moment: next tick
            self.close()
            if not self._failing:
                log.warning("watchdog sample failed: %s: %s", type(exc).__name__, exc)
            self._failing = True
            return
        if self._failing:
            log.info("watchdog sampling again")
        self._failing = False

    def _rpc(self) -> Supervisor:
        if self._supervisor is None:
            self._supervisor = connect(self.layout)
            if self._supervisor is None:
                raise ConnectionError(f"no supervisord on {self.layout.supervisor_socket}")
        return self._supervisor

    async def tick(self) -> list[Verdict]:
        """One round: sample every running program and Redis, act on what must be."""
        infos = await asyncio.to_thread(self._rpc().process_info)
        now = time.time()
        figures: dict[str, Any] = {}
        verdicts: list[Verdict] = []
        for info in infos:
            name, pid = str(info["name"]), int(info["pid"])
            if info["statename"] != RUNNING or pid <= 0 or name == "watchdog":
                continue
            tree = self.sampler.sample(pid)
            if tree is None:
                continue
            figures[name] = {
                "pid": pid,
                "rss_mb": round(tree.rss_mb, 1),
                "cpu_percent": round(tree.cpu_percent, 1),
                "open_files": tree.open_files,
            }
            kind: Kind | None = (
                "engine" if name in PROGRAM_UPSTREAM else "api" if name == "api" else None
            )
            if kind is None:
                continue
            beat = await self._heartbeat(name) if kind == "engine" else None
            obs = Observation(
                program=name,
                kind=kind,
                tree=tree,
                uptime_s=max(0.0, float(info["now"]) - float(info["start"])),
                heartbeat=beat,
            )
            verdict = self.policy.observe(obs, now)
            if verdict is not None:
                verdicts.append(verdict)
        memory = await self._redis_memory()
        if memory is not None:
            figures["redis-memory"] = memory
        await self.redis.set(
            record.SAMPLE_KEY,
            orjson.dumps({"at": now, "programs": figures}),
            px=int(self.s.interval_s * 3000),
        )
        log.debug("watchdog sample", extra={"programs": figures})
        for verdict in verdicts:
            await self.act(verdict)
        return verdicts

    async def _heartbeat(self, program: str) -> EngineHeartbeat | None:
        raw = await self.redis.get(engine_heartbeat_key(PROGRAM_UPSTREAM[program]))
        return EngineHeartbeat.model_validate_json(raw) if raw else None

    async def _redis_memory(self) -> dict[str, Any] | None:
        info = cast(dict[str, object], await self.redis.info("memory"))
        memory = redis_memory(info)
        ratio = memory.ratio
        if ratio is None:
            return None
        figures = {
            "used_mb": round(memory.used_bytes / MB, 1),
            "max_mb": round(memory.max_bytes / MB, 1),
            "ratio": round(ratio, 3),
        }
        high = ratio > self.s.redis_memory_alert_ratio
        if high and not self._redis_high:
            event = WatchdogEvent(
                type="redis.memory_high", program="redis", reason="redis_memory", figures=figures
            )
            await self._report(event, subject="redis", message=f"Redis {event.summary()}")
        self._redis_high = high
        return figures

    async def act(self, verdict: Verdict) -> None:
        upstream = PROGRAM_UPSTREAM.get(verdict.program)
        pid = int(verdict.figures["pid"])
        if not verdict.allowed:
            event = WatchdogEvent(
                type="recycle.blocked",
                program=verdict.program,
                upstream=upstream,
                reason=verdict.reason,
                figures=verdict.figures,
                old_pid=pid,
                blocked_by=verdict.blocked_by,
            )
            message = (
                f"{verdict.program} should be recycled ({event.summary()}) but the "
                f"{verdict.blocked_by} forbids it"
            )
            await self._report(event, subject=f"watchdog:{verdict.program}", message=message)
            return
        event = WatchdogEvent(
            type="engine.recycled" if verdict.kind == "engine" else "api.recycled",
            program=verdict.program,
            upstream=upstream,
            reason=verdict.reason,
            figures=verdict.figures,
            old_pid=pid,
        )
        # Recorded before the restart: the api's monitor looks it up when the new boot shows.
        await record.record(self.redis, event)
        log.warning(
            "recycling %s (pid %s): %s",
            verdict.program,
            pid,
            event.summary(),
            extra={"event": event.model_dump(mode="json")},
        )
        self.policy.recycled(verdict.program, time.time())
        started = time.monotonic()
        await asyncio.to_thread(self._restart, verdict.program)
        log.info(
            "%s recycled in %.1f s",
            verdict.program,
            time.monotonic() - started,
            extra={"event_id": str(event.id)},
        )
        if verdict.kind == "api":
            await self._alert(event, subject="api", message=f"api recycled: {event.summary()}")

    def _restart(self, program: str) -> None:
        rpc = self._rpc().rpc
        try:
            # Waits for the exit: SIGTERM, the program's drain, SIGKILL only past stopwaitsecs.
            rpc.stopProcess(program, True)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != _NOT_RUNNING:
                raise
        try:
            rpc.startProcess(program, True)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != _ALREADY_STARTED:
                raise

    async def _report(self, event: WatchdogEvent, *, subject: str, message: str) -> None:
        await record.record(self.redis, event)
        log.warning(message, extra={"event": event.model_dump(mode="json")})
        await self._alert(event, subject=subject, message=message)

    async def _alert(self, event: WatchdogEvent, *, subject: str, message: str) -> None:
        if self.alerter is None or not self.alerter.configured:
            return
        alert = Alert(
            kind=event.type,
            subject=subject,
            message=message,
            at=event.at,
            details=event.model_dump(mode="json"),
        )
        try:
            await self.alerter.alert(alert)
        except Exception:  # an alert never stops the watchdog
            log.exception("watchdog alert failed")
