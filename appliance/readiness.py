"""What `/readyz` checks: the database answers, Redis answers, each engine's heartbeat is
fresh and its handshakes move.

Freshness is the heartbeat key's TTL: the engine re-sets it every interval with a TTL
longer than the interval, so an absent key means a dead or frozen engine. An engine that
beats but whose handshake slots are held or waited for past `[engine]
handshake_stuck_after_s` connects nobody (an upstream that does not answer, a leaked slot):
it is not ready either, and the check says how many handshakes wait and for how long.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio as aioredis
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from appliance.contracts import EngineHeartbeat, Upstream
from appliance.db.engine import ping as db_ping
from appliance.redis_keys import engine_heartbeat_key
from appliance.settings import Settings

CHECK_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        return all(value == "ok" for value in self.checks.values())


def expected_engines(settings: Settings) -> list[Upstream]:
    return ["whatsapp", "sandbox"] if settings.sandbox.enabled else ["whatsapp"]


async def engine_heartbeat(redis: aioredis.Redis, upstream: Upstream) -> EngineHeartbeat | None:
    raw = await redis.get(engine_heartbeat_key(upstream))
    if raw is None:
        return None
    return EngineHeartbeat.model_validate_json(raw)


async def _database(db: AsyncEngine) -> str:
    await db_ping(db)
    return "ok"


async def _redis(redis: aioredis.Redis) -> str:
    await redis.ping()
    return "ok"


async def _engine(redis: aioredis.Redis, upstream: Upstream, stuck_after_s: float) -> str:
    try:
        beat = await engine_heartbeat(redis, upstream)
    except ValidationError:
        return "heartbeat unreadable"
    if beat is None:
        return "no fresh heartbeat"
    return handshakes_check(beat, stuck_after_s)


def handshakes_check(beat: EngineHeartbeat, stuck_after_s: float) -> str:
    """ "ok", or what is stuck: slots held and handshakes waiting, with their oldest ages."""
    slots = beat.handshakes
    if slots is None or max(slots.oldest_active_s, slots.oldest_waiting_s) <= stuck_after_s:
        return "ok"
    return (
        f"handshakes stuck at the {beat.upstream} upstream: {slots.active} of {slots.limit} "
        f"slots held (oldest {slots.oldest_active_s:.0f}s), {slots.waiting} waiting "
        f"(oldest {slots.oldest_waiting_s:.0f}s); bound {stuck_after_s:g}s "
        "([engine] handshake_stuck_after_s)"
    )


async def _guarded(name: str, check: asyncio.Future[str] | asyncio.Task[str]) -> tuple[str, str]:
    try:
        return name, await asyncio.wait_for(check, CHECK_TIMEOUT_S)
    except TimeoutError:
        return name, f"timed out after {CHECK_TIMEOUT_S:g}s"
    except Exception as exc:  # any failure of a dependency is a "not ready", named
        return name, f"{type(exc).__name__}: {exc}"


async def check_readiness(settings: Settings, db: AsyncEngine, redis: aioredis.Redis) -> Readiness:
    checks = [
        _guarded("database", asyncio.ensure_future(_database(db))),
        _guarded("redis", asyncio.ensure_future(_redis(redis))),
    ]
    checks += [
        _guarded(
            f"engine.{upstream}",
            asyncio.ensure_future(
                _engine(redis, upstream, settings.engine.handshake_stuck_after_s)
            ),
        )
        for upstream in expected_engines(settings)
    ]
    results = await asyncio.gather(*checks)
    return Readiness(checks=dict(results))
