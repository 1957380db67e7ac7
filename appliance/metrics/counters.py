"""Totals that no table holds, counted once per box in Redis as they happen.

- Engine restarts (`wapp_recycles_total{upstream}`): each engine's heartbeat names its boot
  (pid, started_at). Every api worker runs a `BootWatch` that reads the heartbeats every
  heartbeat interval (and at each scrape) and hands each boot to one Lua script, which
  keeps the latest boot seen per engine and counts one restart when a newer boot
  replaces it. Atomic in Redis, so several workers seeing the same boot count it once,
  and a worker reading a heartbeat late (an older boot) counts nothing. The first boot
  ever seen (a new box) is no restart. A restart seen while no api ran is counted when
  the api comes back (the boot stored in Redis differs), as `engine_restarts.py` alerts.
- Reconnects (`wapp_reconnects_total{session}`): every `session.state` event with state
  `reconnecting` the engine published (one per reconnect attempt it schedules), counted by
  the event consumer after its commit. The consumer may run an event's after-commit step
  again (a redelivered batch), so the count is claimed per event id (`SET NX`).
  The same claim also adds the event to the session's recent reconnects (a sorted set
  scored by the engine's event time, trimmed to `RECENT_RECONNECTS_S`), which `wapp doctor`
  counts over its window to find flapping sessions: a total alone cannot say "lately".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import redis.asyncio as aioredis

from appliance import redis_keys
from appliance.contracts import SessionStateEvent, Upstream
from appliance.periodic import every
from appliance.services import commands

log = logging.getLogger("appliance.metrics")

RESTARTS_KEY: Final = redis_keys.ENGINE_RESTARTS_KEY
RECONNECTS_KEY: Final = redis_keys.RECONNECTS_KEY
# How long an event id stays claimed: far longer than any redelivery of it.
EVENT_CLAIM_TTL_S: Final = 7 * 86400
# How far back a session's reconnect times are kept: the longest window doctor looks at.
RECENT_RECONNECTS_S: Final = 3600


# KEYS: last boot, restarts hash. ARGV: started_at (epoch seconds), pid, upstream.
# The stored boot is "<started_at> <pid>"; only a later start replaces (and counts).
_SEE_BOOT: Final = """
local last = redis.call('GET', KEYS[1])
local started = tonumber(ARGV[1])
if last then
  local sep = string.find(last, ' ', 1, true)
  local last_started = tonumber(string.sub(last, 1, sep - 1))
  local last_pid = string.sub(last, sep + 1)
  if started < last_started or (started == last_started and ARGV[2] == last_pid) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[3], last and 1 or 0)
if last then return 1 end
return 0
"""

# KEYS: claim, reconnects hash, recent reconnect times.
# ARGV: session, claim ttl, event time (epoch s), event id, how long recent times are kept.
_COUNT_ONCE: Final = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  local at = tonumber(ARGV[3])
  local keep = tonumber(ARGV[5])
  redis.call('ZADD', KEYS[3], at, ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (at - keep))
  redis.call('EXPIRE', KEYS[3], keep)
  return 1
end
return 0
"""


async def see_boot(redis: aioredis.Redis, upstream: Upstream) -> int:
    """Compare the engine's current heartbeat with the last boot seen; 1 if it restarted."""
    beat = await commands.heartbeat(redis, upstream)
    if beat is None:
        return 0  # no engine now: its next boot is compared when it writes a heartbeat
    started = f"{beat.started_at.timestamp():.6f}"
    keys_and_args = (
        redis_keys.engine_last_boot_key(upstream),
        RESTARTS_KEY,
        started,
        str(beat.pid),
        upstream,
    )
    return int(await redis.eval(_SEE_BOOT, 2, *keys_and_args))  # type: ignore[misc]


async def count_reconnect(redis: aioredis.Redis, event: SessionStateEvent) -> None:
    """Count a `reconnecting` state event once, however often it is handled."""
    if event.payload.state != "reconnecting" or event.session is None:
        return
    await redis.eval(  # type: ignore[misc]
        _COUNT_ONCE,
        3,
        redis_keys.reconnect_seen_key(str(event.id)),
        RECONNECTS_KEY,
        redis_keys.reconnect_times_key(event.session),
        event.session,
        str(EVENT_CLAIM_TTL_S),
        f"{event.timestamp.timestamp():.6f}",
        str(event.id),
        str(RECENT_RECONNECTS_S),
    )


async def recent_reconnects(redis: aioredis.Redis, session: str, since: datetime) -> int:
    """Reconnect events the engine reported for `session` at or after `since` (at most
    `RECENT_RECONNECTS_S` back: older ones are trimmed)."""
    key = redis_keys.reconnect_times_key(session)
    return int(await redis.zcount(key, f"{since.timestamp():.6f}", "+inf"))


class BootWatch:
    """Every api worker's poll of the engines' boots (see the module docstring)."""

    def __init__(
        self, redis: aioredis.Redis, upstreams: Sequence[Upstream], *, interval_s: float
    ) -> None:
        self.redis = redis
        self.upstreams = tuple(upstreams)
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._failing = False

    async def poll(self) -> int:
        """Every engine once; restarts counted. Never raises (Redis down: next time)."""
        counted = 0
        try:
            for upstream in self.upstreams:
                counted += await see_boot(self.redis, upstream)
        except Exception as exc:
            if not self._failing:
                log.warning("engine boot watch: %s: %s", type(exc).__name__, exc)
            self._failing = True
            return counted
        self._failing = False
        return counted

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(
                every(self.interval_s, self._stopping, self.poll), name="wapp-metrics-boots"
            )

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
