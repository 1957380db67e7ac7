"""Sessions: create with admission control, look up (by id or name), drive the engine.

The api owns the `sessions` row and what the engine is told to do; the state itself
comes back from the engine through the event consumer. `active` records whether the
engine should run the session (set by start/restart, cleared by stop/logout).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance import redis_keys
from appliance.auth.principal import Principal
from appliance.contracts import EngineHeartbeat, PacingOverrides, SessionStartPayload, Upstream
from appliance.db.models import Session
from appliance.errors import Conflict, NotFound, ValidationFailed
from appliance.redis_keys import pairing_code_key, qr_key
from appliance.services import commands, session_cache, session_names
from appliance.settings import Settings

_MB = 1024 * 1024


class SessionExists(Conflict):
    code = "SESSION_EXISTS"


class SessionQuotaExceeded(Conflict):
    code = "SESSION_QUOTA_EXCEEDED"


class TooManySessions(Conflict):
    code = "TOO_MANY_SESSIONS"


class EngineMemoryFull(Conflict):
    code = "ENGINE_MEMORY_FULL"


class SessionNotConnected(Conflict):
    code = "SESSION_NOT_CONNECTED"


class SessionNotPaired(Conflict):
    code = "SESSION_NOT_PAIRED"


class NoPairingCode(NotFound):
    code = "NO_PAIRING_CODE"


class NoQr(NotFound):
    code = "NO_QR"


class AlreadyConnected(Conflict):
    code = "SESSION_ALREADY_CONNECTED"


@dataclass(frozen=True)
class NewSession:
    name: str
    upstream: Upstream
    pacing: PacingOverrides | None = None
    push_name: str | None = None
    phone: str | None = None
    # The name its owner gave, when `name` is an engine name (session_names).
    display_name: str | None = None


@dataclass(frozen=True)
class Pending:
    """A QR or pairing code as the event consumer stored it, with its expiry."""

    value: str
    expires_at: datetime | None


# --- lookup --------------------------------------------------------------------------


async def get(
    sessions: async_sessionmaker[AsyncSession], principal: Principal, ref: str
) -> Session:
    """The session named or identified by `ref`, if the caller may see it (else 404)."""
    query = session_names.find(ref, key_id=principal.key.id, is_admin=principal.is_admin)
    async with sessions() as db:
        row = (await db.scalars(query)).first()
    if row is None or not principal.can_see(row.owner_key_id):
        raise NotFound(f"no session {ref}", details={"session": ref})
    return row


async def get_cached(
    sessions: async_sessionmaker[AsyncSession], principal: Principal, ref: str
) -> Session:
    """`get`, answered from `session_cache` when read less than `session_cache.TTL_S` ago.

    For the send path only: the row may be that old (see `session_cache`).
    """
    cached = session_names.cache_key(ref, key_id=principal.key.id, is_admin=principal.is_admin)
    row = session_cache.get(cached)
    if row is None:

        async def read() -> Session | None:
            query = session_names.find(ref, key_id=principal.key.id, is_admin=principal.is_admin)
            async with sessions() as db:
                found = (await db.scalars(query)).first()
            if found is not None:
                session_cache.put(cached, found)
            return found

        row = await session_cache.loads.run((id(sessions), cached), read)
    if row is None or not principal.can_see(row.owner_key_id):
        raise NotFound(f"no session {ref}", details={"session": ref})
    return row


async def list_visible(
    sessions: async_sessionmaker[AsyncSession], principal: Principal
) -> list[Session]:
    query = sa.select(Session).order_by(col(Session.created_at), col(Session.id))
    if not principal.is_admin:
        query = query.where(col(Session.owner_key_id) == principal.key.id)
    async with sessions() as db:
        return list((await db.scalars(query)).all())


def require_connected(row: Session) -> None:
    if row.state != "connected":
        raise SessionNotConnected(
            f"session {row.public_name} is {row.state}, not connected",
            details={"session": row.public_name, "state": row.state},
        )


# --- create and admission ------------------------------------------------------------


async def _admit(
    db: AsyncSession,
    beat: EngineHeartbeat | None,
    settings: Settings,
    principal: Principal,
    new: NewSession,
) -> None:
    limit = principal.key.max_sessions
    if limit is not None:
        owned = await db.scalar(
            sa.select(sa.func.count())
            .select_from(Session)
            .where(col(Session.owner_key_id) == principal.key.id)
        )
        if (owned or 0) >= limit:
            raise SessionQuotaExceeded(
                f"this API key may own at most {limit} sessions",
                details={"maxSessions": limit, "owned": owned},
            )
    total = await db.scalar(sa.select(sa.func.count()).select_from(Session)) or 0
    cap = settings.sessions.max_sessions
    if total >= cap:
        raise TooManySessions(
            f"the appliance runs at most {cap} sessions ([sessions] max_sessions)",
            details={"maxSessions": cap, "sessions": total},
        )
    running = (
        await db.scalar(
            sa.select(sa.func.count())
            .select_from(Session)
            .where(col(Session.upstream) == new.upstream, col(Session.active).is_(True))
        )
        or 0
    )
    _check_memory(beat, settings, new.upstream, active=running)


def _check_memory(
    beat: EngineHeartbeat | None, settings: Settings, upstream: Upstream, *, active: int
) -> None:
    """Refuse a session the engine's memory budget cannot hold.

    From the heartbeat: its RSS, plus an estimate for every active session it does not
    run yet (queued starts) and for the new one. Without a heartbeat (engine down), the
    estimate alone for every active session.
    """
    estimate = settings.sessions.session_estimate_mb * _MB
    budget = settings.sessions.engine_memory_budget_mb * _MB
    rss = beat.rss_bytes if beat else 0
    not_running = max(0, active - (beat.sessions if beat else 0))
    projected = rss + estimate * (not_running + 1)
    if projected > budget:
        raise EngineMemoryFull(
            f"the {upstream} engine's memory budget cannot hold another session "
            f"({projected / _MB:.0f} MB projected, budget {budget / _MB:.0f} MB)",
            details={
                "upstream": upstream,
                "rssMb": round(rss / _MB, 1),
                "projectedMb": round(projected / _MB, 1),
                "budgetMb": settings.sessions.engine_memory_budget_mb,
            },
        )


async def create(
    writer: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
    settings: Settings,
    principal: Principal,
    new: NewSession,
) -> Session:
    """Write the row (owner: the caller's key), then tell the engine to start it."""
    if new.upstream == "sandbox" and not settings.sandbox.enabled:
        raise ValidationFailed(
            "upstream sandbox needs [sandbox] enabled = true",
            details={"fields": [{"field": "body.upstream", "message": "sandbox is disabled"}]},
        )
    row = Session(
        name=new.name,
        display_name=new.display_name or new.name,
        owner_key_id=principal.key.id,
        upstream=new.upstream,
        pacing=new.pacing.model_dump(exclude_none=True) if new.pacing else None,
        phone=new.phone,
        push_name=new.push_name,
        active=True,
    )
    # Read before the write transaction: SQLite holds its write lock until commit.
    beat = await commands.heartbeat(redis, new.upstream)
    try:
        async with writer() as db, db.begin():
            await _admit(db, beat, settings, principal, new)
            db.add(row)
    except IntegrityError as exc:
        shown = new.display_name or new.name
        raise SessionExists(f"a session named {shown} exists", details={"name": shown}) from exc
    await _send_start(redis, row)
    return row


def _start_payload(row: Session, *, pairing: Literal["qr", "code"] = "qr") -> SessionStartPayload:
    return SessionStartPayload(
        upstream=row.upstream,
        push_name=row.push_name,
        pacing=PacingOverrides.model_validate(row.pacing) if row.pacing else None,
        pairing=pairing,
        phone=row.phone,
        paired_at=row.paired_at,
    )


async def _send_start(
    redis: aioredis.Redis, row: Session, *, pairing: Literal["qr", "code"] = "qr"
) -> None:
    await commands.send(
        redis,
        "session_start",
        session=row.name,
        upstream=row.upstream,
        payload=_start_payload(row, pairing=pairing).model_dump(mode="json"),
    )


# --- lifecycle -----------------------------------------------------------------------

Action = Literal["start", "stop", "restart", "logout"]
_COMMAND: dict[Action, str] = {
    "start": "session_start",
    "stop": "session_stop",
    "restart": "session_restart",
    "logout": "session_logout",
}


async def _set_fields(
    writer: async_sessionmaker[AsyncSession], row: Session, **values: Any
) -> Session:
    async with writer() as db, db.begin():
        fresh = await db.get(Session, row.id)
        if fresh is None:
            raise NotFound(f"no session {row.public_name}", details={"session": row.public_name})
        for name, value in values.items():
            setattr(fresh, name, value)
    return fresh


async def _count_active(reader: async_sessionmaker[AsyncSession], upstream: Upstream) -> int:
    query = (
        sa.select(sa.func.count())
        .select_from(Session)
        .where(col(Session.upstream) == upstream, col(Session.active).is_(True))
    )
    async with reader() as db:
        return int(await db.scalar(query) or 0)


async def act(
    writer: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
    row: Session,
    action: Action,
    *,
    settings: Settings,
    reader: async_sessionmaker[AsyncSession],
) -> Session:
    """start/restart mark the session active, stop/logout inactive; then the command.

    Starting a stopped session adds a socket to the engine: the memory budget decides.
    """
    starting = action in ("start", "restart")
    if starting and not row.active:
        beat = await commands.heartbeat(redis, row.upstream)
        _check_memory(
            beat, settings, row.upstream, active=await _count_active(reader, row.upstream)
        )
    row = await _set_fields(writer, row, active=starting)
    if action == "start":
        await _send_start(redis, row)
    else:
        await commands.send(
            redis, _COMMAND[action], session=row.name, upstream=row.upstream, payload={}
        )
    if action == "logout":
        await redis.delete(qr_key(row.name), pairing_code_key(row.name))
    return row


async def request_pairing_code(
    writer: async_sessionmaker[AsyncSession], redis: aioredis.Redis, row: Session, phone: str
) -> Session:
    """Start the session pairing by code for `phone`; the code comes back as an event."""
    if row.state == "connected":
        raise AlreadyConnected(
            f"session {row.public_name} is already connected", details={"session": row.public_name}
        )
    row = await _set_fields(writer, row, phone=phone, active=True)
    await _send_start(redis, row, pairing="code")
    return row


async def delete(
    writer: async_sessionmaker[AsyncSession], redis: aioredis.Redis, row: Session
) -> None:
    """Log the number out, then forget the session, its messages and its queued sends."""
    await commands.send(
        redis, "session_logout", session=row.name, upstream=row.upstream, payload={}
    )
    async with writer() as db, db.begin():
        await db.execute(sa.delete(Session).where(col(Session.id) == row.id))
    session_cache.clear()
    # A new session with the same name must not inherit sends queued for this one.
    await redis.delete(
        redis_keys.session_commands_stream(row.name),
        qr_key(row.name),
        pairing_code_key(row.name),
    )


# --- what the event consumer keeps in Redis -------------------------------------------


async def _pending(redis: aioredis.Redis, key: str, field: str) -> Pending | None:
    raw = await redis.get(key)
    if raw is None:
        return None
    value = orjson.loads(raw)
    expires = value.get("expires_at")
    return Pending(
        value=str(value[field]), expires_at=datetime.fromisoformat(expires) if expires else None
    )


async def current_qr(redis: aioredis.Redis, row: Session) -> Pending:
    if row.state == "connected":
        raise AlreadyConnected(
            f"session {row.public_name} is connected: there is no QR to scan",
            details={"session": row.public_name},
        )
    found = await _pending(redis, qr_key(row.name), "qr")
    if found is None:
        raise NoQr(
            f"session {row.public_name} has no current QR (state {row.state})",
            details={"session": row.public_name, "state": row.state},
        )
    return found


async def current_pairing_code(redis: aioredis.Redis, row: Session) -> Pending:
    found = await _pending(redis, pairing_code_key(row.name), "code")
    if found is None:
        raise NoPairingCode(
            f"session {row.public_name} has no current pairing code (state {row.state})",
            details={"session": row.public_name, "state": row.state},
        )
    return found


def me(row: Session) -> Session:
    if row.me_jid is None:
        raise SessionNotPaired(
            f"session {row.public_name} is not paired yet", details={"session": row.public_name}
        )
    return row
