"""The session state the api shows: the row, overlaid with what its engine last saw.

The row holds the last `session.state` event applied. It goes stale when the engine dies
(no event says so) or when the engine stops holding the session without a word (a lost
registry entry, a crash before the event). Each engine's heartbeat carries the sessions it
holds and their states (`EngineHeartbeat.session_states`, written every interval with a
TTL), so GET /v1/sessions[/{id}] shows the newer of the two, and never `connected` for a
session no live engine holds. See docs/sessions.md.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from pydantic import ValidationError

from appliance.contracts import EngineHeartbeat, Upstream
from appliance.db.models import Session
from appliance.services import commands

# States only true while an engine holds the session; the others (created, failed,
# stopped, logged_out) stay true without one.
_HELD_STATES = frozenset({"connecting", "qr", "pairing_code", "connected", "reconnecting"})


def overlay_engine_view(row: Session, beat: EngineHeartbeat | None) -> None:
    """Make `row` (detached, read-only) show what its engine last saw, not a stale row.

    - No fresh heartbeat (engine dead or frozen): a state that needs the engine shows as
      `reconnecting`, the reason naming the engine.
    - A heartbeat written after the row's last state change is newer truth: a session it
      holds shows the state it reports; one it does not hold shows as `reconnecting`
      (when the row claims a state that needs the engine).
    - An older heartbeat leaves the row alone: the state event applied since is newer.
    """
    if beat is None:
        if row.state in _HELD_STATES:
            row.state = "reconnecting"
            row.state_reason = f"the {row.upstream} engine is not running (no fresh heartbeat)"
        return
    if beat.at is None or beat.at <= row.state_changed_at:
        return
    held = beat.session_states.get(row.name)
    if held is not None and held != row.state:
        row.state, row.state_reason, row.state_changed_at = held, None, beat.at
    elif held is None and row.state in _HELD_STATES:
        row.state = "reconnecting"
        row.state_reason = f"the {row.upstream} engine (pid {beat.pid}) does not hold this session"
        row.state_changed_at = beat.at


async def _beat_or_none(redis: aioredis.Redis, upstream: Upstream) -> EngineHeartbeat | None:
    try:
        return await commands.heartbeat(redis, upstream)
    except (aioredis.RedisError, ValidationError):
        return None  # no readable heartbeat: nothing says the engine holds anything


async def seen_by_engine(redis: aioredis.Redis, rows: list[Session]) -> list[Session]:
    """`rows` (from `get`/`list_visible`, read-only) with their engines' view overlaid.

    One heartbeat read per upstream. The send path keeps reading the row (its commands
    wait in Redis across an engine restart); this is what GET answers.
    """
    beats = {u: await _beat_or_none(redis, u) for u in {r.upstream for r in rows}}
    for row in rows:
        overlay_engine_view(row, beats[row.upstream])
    return rows
