"""The database is the system of record for sends: a committed row whose command is not
in Redis is enqueued again.

A send commits its `messages` row, then XADDs its command. Between the two, Redis can
refuse the XADD (a restart refuses connections for about half a second) or the api can
die; Redis can also lose its last second of writes (AOF `everysec`). Such a row stays
`queued` with nothing in Redis that would ever send it. Two paths put it back:

- a retry with the same Idempotency-Key (`ensure_enqueued`, called by the replay);
- the sweep (`Requeuer`): at api start, every `interval_s`, and soon after a failed
  enqueue, it looks at each session's `queued`/`sending` rows older than `min_age_s`
  (younger ones may still be on their way to Redis) and XADDs the commands of those that
  have neither a `wapp:sent:{id}` mark nor an entry in the session's stream.

A command XADDed twice is harmless: the engine sends a message id once (its sent marks),
and a resend after a lost mark carries the same deterministic WhatsApp id, which the
receiver deduplicates (design.md, "Message lifecycle"). Several api workers share one
sweep through a Redis lock, so they do not scan and XADD the same rows together.

Rows are enqueued whatever their session's state: a stopped, failed or logged-out
session's commands wait in its stream, as sends queued before the stop do, and go out
when it connects again. A deleted session's rows are gone with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
import sqlalchemy as sa
from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance import periodic, redis_keys
from appliance.db.models import Message, Session
from appliance.db.types import utcnow
from appliance.errors import EnqueueFailed
from appliance.logs import trace_id_var
from appliance.services import commands, outgoing

log = logging.getLogger(__name__)

PENDING_STATUSES: Final = ("queued", "sending")
# Younger rows may still be between their commit and their XADD (the batcher's enqueue
# stage): leave them to it.
MIN_AGE_S: Final = 15.0
INTERVAL_S: Final = 60.0
# While Redis is down, how often the sweep tries again (it runs as soon as Redis is back).
RETRY_S: Final = 2.0
LOCK_KEY: Final = redis_keys.REQUEUE_LOCK_KEY
_LOCK_MS: Final = 120_000
# A command is XADDed after its row commits, by this api's clock and Redis' on the same
# box: a stream scan starts this long before the oldest row, for clock steps.
_SLACK_MS: Final = 5 * 60_000
_PAGE: Final = 1000
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


def _command(row: Message, session: str) -> Any:
    """The row's command as first built: same id, payload and trace id."""
    token = trace_id_var.set(row.trace_id)
    try:
        return commands.build(
            outgoing.COMMAND_TYPE[row.kind],
            session=session,
            payload=row.payload,
            command_id=uuid.UUID(row.id),
        )
    finally:
        trace_id_var.reset(token)


def _entry_command_id(data: bytes) -> str | None:
    # Envelopes are pydantic dumps whose first field is the id: read it without parsing
    # the whole (up to 64 KiB) document; anything else is parsed.
    if data.startswith(b'{"id":"') and data[43:44] == b'"':
        return data[7:43].decode()
    try:
        found = orjson.loads(data).get("id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return found if isinstance(found, str) else None


async def _unmarked(redis: aioredis.Redis, ids: Sequence[str]) -> set[str]:
    """The ids the engine has never taken up (no `wapp:sent:` mark of any kind)."""
    found: set[str] = set()
    for start in range(0, len(ids), _PAGE):
        chunk = ids[start : start + _PAGE]
        marks = await redis.mget([redis_keys.sent_mark_key(i) for i in chunk])
        found.update(i for i, mark in zip(chunk, marks, strict=True) if mark is None)
    return found


async def _in_stream(
    redis: aioredis.Redis, stream: str, wanted: set[str], since: datetime
) -> set[str]:
    """Which of `wanted` have an entry in `stream` (acked or not: XACK keeps entries)."""
    found: set[str] = set()
    start = f"{max(0, int(since.timestamp() * 1000) - _SLACK_MS)}-0"
    while len(found) < len(wanted):
        entries = await redis.xrange(stream, min=start, max="+", count=_PAGE)
        for _, fields in entries:
            command_id = _entry_command_id(fields.get(b"data", b""))
            if command_id in wanted:
                found.add(command_id)
        if len(entries) < _PAGE:
            break
        last = entries[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else str(last))
    return found


async def missing_ids(
    redis: aioredis.Redis, stream: str, rows: Iterable[tuple[str, datetime]]
) -> set[str]:
    """Of (id, created_at) rows of one session, those whose command is nowhere in Redis."""
    created = dict(rows)
    if not created:
        return set()
    unmarked = await _unmarked(redis, list(created))
    if not unmarked:
        return set()
    since = min(created[i] for i in unmarked)
    return unmarked - await _in_stream(redis, stream, unmarked, since)


async def _xadd(redis: aioredis.Redis, rows: Sequence[Message], session: Session) -> int:
    pipe = redis.pipeline(transaction=False)
    added = 0
    for row in rows:
        try:
            command = _command(row, session.name)
        except (KeyError, ValidationError):
            # Not a command this version can build (a row from elsewhere): never retried.
            log.error("a queued row has no valid command", extra={"message_id": row.id})
            continue
        pipe.xadd(
            commands.stream_for(command, upstream=session.upstream),
            {"data": command.model_dump_json()},
            maxlen=commands.STREAM_MAXLEN,
            approximate=True,
        )
        added += 1
    if added:
        await pipe.execute()
    return added


async def ensure_enqueued(
    reader: async_sessionmaker[AsyncSession], redis: aioredis.Redis, row: Message
) -> bool:
    """For an Idempotency-Key replay: XADD the row's command when Redis holds no trace of
    it. True when it was XADDed; `EnqueueFailed` (503, the same id) when Redis refuses."""
    if row.direction != "out" or row.status not in PENDING_STATUSES:
        return False
    async with reader() as db:
        session = await db.get(Session, row.session_id)
    if session is None:
        return False
    stream = redis_keys.session_commands_stream(session.name)
    try:
        if not await missing_ids(redis, stream, [(row.id, row.created_at)]):
            return False
        added = await _xadd(redis, [row], session) > 0
    except (RedisError, OSError) as exc:
        raise EnqueueFailed(
            "the message is stored but Redis is unavailable to queue it; it is enqueued "
            "automatically once Redis is back",
            details={"messageId": row.id},
        ) from exc
    if added:
        log.info("replayed send enqueued again", extra={"message_id": row.id})
    return added


async def sweep(
    reader: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
    *,
    min_age_s: float = MIN_AGE_S,
    now: datetime | None = None,
) -> int:
    """One pass over every session: XADD what is committed and nowhere in Redis. Returns
    how many commands were XADDed; 0 when another worker holds the sweep."""
    token = uuid.uuid4().hex
    if not await redis.set(LOCK_KEY, token, nx=True, px=_LOCK_MS):
        return 0
    try:
        cutoff = (now or utcnow()) - timedelta(seconds=min_age_s)
        async with reader() as db:
            sessions = list((await db.scalars(sa.select(Session))).all())
        total = 0
        for session in sessions:
            total += await _sweep_session(reader, redis, session, cutoff)
        return total
    finally:
        with contextlib.suppress(RedisError, OSError):
            await redis.eval(_RELEASE, 1, LOCK_KEY, token)  # type: ignore[misc]


async def _sweep_session(
    reader: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
    session: Session,
    cutoff: datetime,
) -> int:
    # The (session_id, status, created_at, id) index serves this.
    query = sa.select(col(Message.id), col(Message.created_at)).where(
        col(Message.session_id) == session.id,
        col(Message.status).in_(PENDING_STATUSES),
        col(Message.created_at) < cutoff,
    )
    async with reader() as db:
        candidates = [(r[0], r[1]) for r in (await db.execute(query)).all()]
    lost = sorted(
        await missing_ids(redis, redis_keys.session_commands_stream(session.name), candidates)
    )
    total = 0
    for start in range(0, len(lost), _PAGE):
        async with reader() as db:
            rows = (
                await db.scalars(
                    sa.select(Message)
                    .where(col(Message.id).in_(lost[start : start + _PAGE]))
                    .order_by(col(Message.created_at), col(Message.id))
                )
            ).all()
        total += await _xadd(redis, rows, session)
    if total:
        log.warning(
            "committed sends found missing from Redis were enqueued again",
            extra={"session": session.name, "messages": total},
        )
    return total


class Requeuer:
    """The api's background sweep: at start, every `interval_s`, and `min_age_s` after a
    failed enqueue (`soon`); while Redis is down, every `retry_s` until it is back."""

    def __init__(
        self,
        reader: async_sessionmaker[AsyncSession],
        redis: aioredis.Redis,
        *,
        min_age_s: float = MIN_AGE_S,
        interval_s: float = INTERVAL_S,
        retry_s: float = RETRY_S,
        tick_s: float = 1.0,
    ) -> None:
        self.reader = reader
        self.redis = redis
        self.min_age_s = min_age_s
        self.interval_s = interval_s
        self.retry_s = retry_s
        self.tick_s = tick_s
        self._next_at = 0.0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(
            periodic.every(self.tick_s, self._stopping, self._tick), name="wapp-requeue"
        )

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def soon(self) -> None:
        """An enqueue failed: sweep once those rows are old enough to be looked at."""
        loop = asyncio.get_running_loop()
        self._next_at = min(self._next_at, loop.time() + self.min_age_s)

    async def _tick(self) -> None:
        now = asyncio.get_running_loop().time()
        if now < self._next_at:
            return
        # Set first: a `soon` during this sweep brings the next one forward again.
        self._next_at = now + self.interval_s
        try:
            await sweep(self.reader, self.redis, min_age_s=self.min_age_s)
        except (RedisError, OSError) as exc:
            log.warning("requeue sweep waiting for redis", extra={"error": str(exc)})
            self._next_at = min(self._next_at, now + self.retry_s)
        except Exception:
            log.exception("requeue sweep failed")
