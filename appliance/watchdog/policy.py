"""When the watchdog recycles a program: the decision alone, fed with measured figures.

An engine is recycled when its tree's RSS is over `engine_max_rss_mb` for
`over_limit_samples` samples in a row, when it wrote no heartbeat for `heartbeat_stale_s`
(past `startup_grace_s` after its start), or when its heartbeat's loop lag is over
`loop_lag_max_ms` for `loop_lag_samples` samples in a row; the api when its RSS is over
`api_max_rss_mb` for `over_limit_samples`. Counters start again whenever the program's pid
changes (a crash, `wapp restart`, our own recycle), so a new process is never judged on
its predecessor's figures. Each program has a cooldown after a recycle and a limit per
hour: a program that leaks faster than that is better left running and alerted about than
restarted in a loop.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from appliance.contracts import EngineHeartbeat
from appliance.settings import WatchdogSettings
from appliance.watchdog.measure import MB, TreeFigures

Reason = Literal["memory", "heartbeat_stale", "loop_lag"]
Kind = Literal["engine", "api"]
HOUR_S = 3600.0


@dataclass(frozen=True)
class Observation:
    program: str  # supervisord's name: engine, engine-sandbox, api
    kind: Kind
    tree: TreeFigures
    # Seconds since supervisord started the program.
    uptime_s: float
    # An engine's heartbeat as read now (None: the key expired); always None for the api.
    heartbeat: EngineHeartbeat | None = None


@dataclass(frozen=True)
class Verdict:
    program: str
    kind: Kind
    reason: Reason
    figures: dict[str, Any]
    # False: the reason holds but the cooldown or the hourly limit forbids acting now.
    allowed: bool
    blocked_by: Literal["cooldown", "hourly_limit"] | None = None


@dataclass
class _Track:
    pid: int = 0
    over: int = 0
    lagging: int = 0
    # Wall time of the newest heartbeat this process wrote, as the heartbeat says.
    last_beat_at: float | None = None
    blocked_reported: bool = False
    recycles: deque[float] = field(default_factory=deque)


class Policy:
    def __init__(self, settings: WatchdogSettings) -> None:
        self.s = settings
        self._tracks: dict[str, _Track] = {}

    def _track(self, program: str) -> _Track:
        return self._tracks.setdefault(program, _Track())

    def recycled(self, program: str, at: float) -> None:
        """Count a recycle done at wall time `at` (ours now, or one read back from Redis)."""
        track = self._track(program)
        track.recycles.append(at)
        track.over = track.lagging = 0
        track.blocked_reported = False

    def recycles_in_last_hour(self, program: str, now: float) -> int:
        return sum(1 for at in self._track(program).recycles if now - at < HOUR_S)

    def observe(self, obs: Observation, now: float) -> Verdict | None:
        """Take one sample (wall time `now`); a verdict when the program should be recycled.

        A blocked verdict (cooldown, hourly limit) is returned once per episode, so the
        runner reports it once, not every interval.
        """
        track = self._track(obs.program)
        if track.pid != obs.tree.pid:
            track.pid = obs.tree.pid
            track.over = track.lagging = 0
            track.last_beat_at = None
            track.blocked_reported = False
        reason, figures = self._reason(obs, track, now)
        if reason is None:
            track.blocked_reported = False
            return None
        while track.recycles and now - track.recycles[0] >= HOUR_S:
            track.recycles.popleft()
        blocked: Literal["cooldown", "hourly_limit"] | None = None
        if track.recycles and now - track.recycles[-1] < self.s.cooldown_s:
            blocked = "cooldown"
        elif len(track.recycles) >= self.s.max_recycles_per_hour:
            blocked = "hourly_limit"
        if blocked is not None:
            if track.blocked_reported:
                return None
            track.blocked_reported = True
        return Verdict(
            program=obs.program,
            kind=obs.kind,
            reason=reason,
            figures=figures,
            allowed=blocked is None,
            blocked_by=blocked,
        )

    def _reason(
        self, obs: Observation, track: _Track, now: float
    ) -> tuple[Reason | None, dict[str, Any]]:
        limit_mb = self.s.engine_max_rss_mb if obs.kind == "engine" else self.s.api_max_rss_mb
        track.over = track.over + 1 if obs.tree.rss_bytes > limit_mb * MB else 0
        figures: dict[str, Any] = {
            "pid": obs.tree.pid,
            "rss_mb": round(obs.tree.rss_mb, 1),
            "rss_limit_mb": limit_mb,
            "over_limit_samples": track.over,
            "cpu_percent": round(obs.tree.cpu_percent, 1),
            "open_files": obs.tree.open_files,
            "processes": obs.tree.processes,
            "uptime_s": round(obs.uptime_s, 1),
        }
        if obs.kind == "engine":
            beat = obs.heartbeat
            # A key still holding the previous process's heartbeat says nothing of this one.
            if beat is not None and beat.pid == obs.tree.pid:
                written = beat.at.timestamp() if beat.at is not None else now
                track.last_beat_at = max(track.last_beat_at or written, written)
                over_lag = beat.loop_lag_ms > self.s.loop_lag_max_ms
                track.lagging = track.lagging + 1 if over_lag else 0
                figures |= {
                    "heap_used_mb": round(beat.heap_used_bytes / MB, 1),
                    "heap_total_mb": round(beat.heap_total_bytes / MB, 1),
                    "loop_lag_ms": round(beat.loop_lag_ms, 1),
                    "sessions": beat.sessions,
                }
            # Never seen a heartbeat of this process: it is as old as the process.
            age = now - track.last_beat_at if track.last_beat_at is not None else obs.uptime_s
            figures |= {"heartbeat_age_s": round(age, 1), "loop_lag_samples": track.lagging}
            if track.over >= self.s.over_limit_samples:
                return "memory", figures
            if obs.uptime_s >= self.s.startup_grace_s and age > self.s.heartbeat_stale_s:
                return "heartbeat_stale", figures | {"heartbeat_stale_s": self.s.heartbeat_stale_s}
            if track.lagging >= self.s.loop_lag_samples:
                return "loop_lag", figures | {"loop_lag_max_ms": self.s.loop_lag_max_ms}
            return None, figures
        if track.over >= self.s.over_limit_samples:
            return "memory", figures
        return None, figures
