"""Checks of the running stack: its programs, Redis, the database, the engines'
heartbeats, sessions that are stuck, and the webhook outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
import sqlalchemy as sa
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance.contracts import Upstream
from appliance.db import migrate
from appliance.db.models import Session, WebhookDelivery
from appliance.doctor.findings import Finding, fail, info, ok, warn
from appliance.metrics import counters
from appliance.services import commands
from appliance.settings import Settings
from appliance.stack.layout import StackLayout
from appliance.stack.rpc import connect

_MB = 1024 * 1024
# A session in one of these for longer than this is stuck (reconnects back off to 60 s).
STUCK_AFTER = timedelta(minutes=5)
_TRANSIENT = ("connecting", "reconnecting")
# The webhook backlog that is more than a burst.
BACKLOG_WARN = 1000
# Flapping: more than FLAP_RECONNECTS reconnects within FLAP_WINDOW. A healthy session
# reconnects a few times a day (server-side resets); one that keeps dropping its link
# (bad network, a number WhatsApp is throttling, two boxes running it) reconnects again
# and again without ever reaching `failed`, which takes 3 attempts in a row.
FLAP_WINDOW = timedelta(minutes=15)
FLAP_RECONNECTS = 5


def programs(settings: Settings) -> list[Finding]:
    supervisor = connect(StackLayout.of(settings))
    if supervisor is None:
        return [fail("programs", "supervisord", "the stack is not running", "`wapp up -d`")]
    with supervisor:
        status = supervisor.status()
    found = []
    for p in status.programs:
        if p.running:
            found.append(ok("programs", p.name, f"{p.state}, pid {p.pid}"))
        else:
            found.append(
                fail(
                    "programs",
                    p.name,
                    p.state,
                    f"`wapp logs {p.name}` says why; `wapp restart {p.name}`",
                )
            )
    return found


async def redis_checks(redis: aioredis.Redis, settings: Settings) -> list[Finding]:
    try:
        persistence = await redis.info("persistence")
        memory = await redis.info("memory")
    except (RedisError, OSError) as exc:
        return [fail("redis", "reachable", str(exc), "`wapp status`; `wapp logs redis`")]
    found = []
    if not persistence.get("aof_enabled"):
        found.append(
            fail(
                "redis",
                "persistence",
                "AOF is off: a crash loses queued work and auth state",
                "set appendonly yes (the managed Redis does: `wapp restart redis`)",
            )
        )
    elif persistence.get("aof_last_write_status") != "ok":
        found.append(
            fail(
                "redis",
                "persistence",
                f"the last AOF write failed ({persistence.get('aof_last_write_status')})",
                "check the data dir's disk (`wapp doctor` disk) and `wapp logs redis`",
            )
        )
    else:
        found.append(ok("redis", "persistence", "AOF on, last write ok"))
    used = int(memory.get("used_memory", 0))
    limit = int(memory.get("maxmemory", 0)) or settings.redis.maxmemory_mb * _MB
    detail = f"{used / _MB:.1f} MB of {limit / _MB:.0f} MB"
    if used > limit * settings.watchdog.redis_memory_alert_ratio:
        found.append(
            warn("redis", "memory", detail, "raise [redis] maxmemory_mb; look for big streams")
        )
    else:
        found.append(ok("redis", "memory", detail))
    return found


async def database(settings: Settings, reader: async_sessionmaker[AsyncSession]) -> Finding:
    try:
        async with reader() as db:
            await db.execute(sa.text("SELECT 1"))
        revision = await migrate.current(settings)
    except (SQLAlchemyError, OSError) as exc:
        return fail("database", "reachable", str(exc), "check [database] url; `wapp db`")
    head = migrate.head_revision()
    if revision != head:
        return fail(
            "database",
            "schema",
            f"at revision {revision}, the code needs {head}",
            "`wapp db upgrade`",
        )
    return ok("database", "schema", f"reachable, at revision {revision}")


async def engines(redis: aioredis.Redis, settings: Settings) -> list[Finding]:
    upstreams: list[Upstream] = ["whatsapp"]
    if settings.sandbox.enabled:
        upstreams.append("sandbox")
    found = []
    budget = settings.sessions.engine_memory_budget_mb * _MB
    for upstream in upstreams:
        try:
            beat = await commands.heartbeat(redis, upstream)
        except (RedisError, OSError, ValueError):
            beat = None
        name = f"engine ({upstream})"
        if beat is None:
            found.append(
                fail("engines", name, "no heartbeat", "`wapp logs engine` / `wapp status`")
            )
            continue
        rss = f"RSS {beat.rss_bytes / _MB:.0f} MB of {budget / _MB:.0f} MB budget"
        detail = f"{beat.sessions} sessions, {rss}, loop lag {beat.loop_lag_ms:.0f} ms"
        if beat.rss_bytes > budget * 0.9:
            found.append(
                warn(
                    "engines",
                    name,
                    detail,
                    "raise [sessions] engine_memory_budget_mb or move sessions",
                )
            )
        else:
            found.append(ok("engines", name, detail))
        if beat.wa_version is not None:
            wa = beat.wa_version
            line = f"{wa.version} ({wa.source}, checked {wa.checked_at:%Y-%m-%d %H:%M})"
            if wa.source == "pinned" and upstream == "whatsapp":
                found.append(
                    warn(
                        "versions",
                        f"whatsapp web ({upstream})",
                        line,
                        "the box could not fetch the current version: check its outbound "
                        "access to [engine] wa_version_url",
                    )
                )
            else:
                found.append(info("versions", f"whatsapp web ({upstream})", line))
    return found


async def sessions(reader: async_sessionmaker[AsyncSession]) -> list[Finding]:
    async with reader() as db:
        rows = list(
            (await db.scalars(sa.select(Session).where(col(Session.active).is_(True)))).all()
        )
    now = datetime.now(UTC)
    found = []
    for row in rows:
        name = f"session {row.public_name}"
        age = now - row.state_changed_at
        if row.state == "failed":
            found.append(
                fail(
                    "sessions",
                    name,
                    f"failed: {row.state_reason or 'no reason given'}",
                    f"`wapp sessions restart {row.public_name}` (or `... qr` to pair again)",
                )
            )
        elif row.state in _TRANSIENT and age > STUCK_AFTER:
            found.append(
                warn(
                    "sessions",
                    name,
                    f"{row.state} for {age.total_seconds() / 60:.0f} min"
                    + (f": {row.state_reason}" if row.state_reason else ""),
                    f"`wapp sessions restart {row.public_name}`; `wapp logs engine`",
                )
            )
        elif row.state in ("qr", "pairing_code"):
            found.append(
                info(
                    "sessions", name, f"waiting to be paired (`wapp sessions qr {row.public_name}`)"
                )
            )
    connected = sum(1 for r in rows if r.state == "connected")
    found.append(info("sessions", "active", f"{connected} of {len(rows)} connected"))
    return found


async def flapping(
    redis: aioredis.Redis,
    reader: async_sessionmaker[AsyncSession],
    *,
    window: timedelta = FLAP_WINDOW,
    limit: int = FLAP_RECONNECTS,
) -> list[Finding]:
    """Active sessions that reconnected more than `limit` times within `window`, from the
    reconnect events the engine reported (metrics/counters.py keeps their times)."""
    async with reader() as db:
        rows = list(
            (await db.scalars(sa.select(Session).where(col(Session.active).is_(True)))).all()
        )
    since = datetime.now(UTC) - window
    minutes = f"{window.total_seconds() / 60:g} min"
    found = []
    try:
        for row in rows:
            count = await counters.recent_reconnects(redis, row.name, since)
            if count > limit:
                found.append(
                    warn(
                        "sessions",
                        f"session {row.public_name} flapping",
                        f"{count} reconnects in the last {minutes} (now {row.state})",
                        "`wapp logs engine` says why it drops; check the box's network; "
                        "a number run on another box too keeps kicking this one off; "
                        f"then `wapp sessions restart {row.public_name}`",
                    )
                )
    except (RedisError, OSError) as exc:
        return [fail("sessions", "flapping", str(exc), "`wapp status`; `wapp logs redis`")]
    if not found:
        found.append(
            ok("sessions", "flapping", f"none over {limit} reconnects in the last {minutes}")
        )
    return found


async def webhooks(reader: async_sessionmaker[AsyncSession]) -> list[Finding]:
    query = sa.select(col(WebhookDelivery.status), sa.func.count()).group_by(
        col(WebhookDelivery.status)
    )
    async with reader() as db:
        counts = {str(s): int(n) for s, n in (await db.execute(query)).all()}
    found = []
    pending = counts.get("pending", 0)
    if pending > BACKLOG_WARN:
        found.append(
            warn(
                "webhooks",
                "backlog",
                f"{pending} deliveries waiting",
                "a receiver is slow or down: `wapp webhooks list`, `wapp webhooks test ID`",
            )
        )
    else:
        found.append(ok("webhooks", "backlog", f"{pending} deliveries waiting"))
    dead = counts.get("dead", 0)
    if dead:
        found.append(
            warn(
                "webhooks",
                "dead letters",
                f"{dead} deliveries gave up after the retry window",
                "fix the receiver, then `wapp webhooks replay ID --since 1d --failed-only`",
            )
        )
    else:
        found.append(ok("webhooks", "dead letters", "none"))
    return found
