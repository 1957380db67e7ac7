"""The api's consumer group on `wapp:events`: persist, fan out to webhooks, then XACK.

Each batch is one transaction: the processed-event marks, the applied state and the
webhook outbox rows commit together, and only then are the entries acked. A crash
before the ack redelivers the batch; the processed-event marks make that a no-op. With
several uvicorn workers each runs one consumer of the same group, so every event is
handled by one of them.

Entries a dead consumer left pending are claimed at once, at start and every
`claim_every_s` (`claim_orphans`): each consumer keeps a liveness key, and one whose key
is gone, or whose process on this host no longer runs (a kill -9 leaves its key up to
`LIVENESS_TTL_S`), is dead; its entries are XCLAIMed with min-idle 0 and handled, and
it is removed from the group (XGROUP DELCONSUMER). Anything else left pending (a
consumer that stalled) is claimed after `claim_idle_ms`.

A `session.version_refused` event (WhatsApp refused the client's WhatsApp Web version)
also becomes an admin alert, sent in the background once its batch is committed, and
only the first time the event is handled (a replay finds it marked processed).

A QR or pairing code event is deleted from the stream (XDEL) once acked: the QR carries
the companion's ADV secret, and its fan-out (live listeners, webhooks, the current QR
key) is done by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance import periodic
from appliance.contracts import EVENT_ADAPTER, Event, SessionStateEvent, WaVersionRefusedEvent
from appliance.db.models import ProcessedEvent
from appliance.db.statements import insert_or_ignore
from appliance.events import ephemeral
from appliance.events.apply import apply_event
from appliance.logs import trace_id_var
from appliance.metrics import counters
from appliance.redis_keys import API_CONSUMER_GROUP, EVENTS_STREAM
from appliance.redis_keys import consumer_liveness_key as liveness_key
from appliance.webhooks.alerts import Alert, Alerter, version_refused_alert
from appliance.webhooks.outbox import enqueue_deliveries

log = logging.getLogger("appliance.events")

Entry = tuple[str, Event | None]

# A live consumer refreshes its key every `LIVENESS_EVERY_S`; one whose key expired is dead.
LIVENESS_TTL_S = 30
LIVENESS_EVERY_S = 5.0


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def process_gone(name: str) -> bool:
    """True when `name` (see `consumer_name`) is a consumer of this host whose process
    no longer runs, or whose pid this very process now has (a restarted container)."""
    host, _, rest = name.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # the caller never asks about its own name
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a process of another user has that pid now
        return False
    return False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _carries_pairing_secret(event: Event | None) -> bool:
    return (
        isinstance(event, SessionStateEvent)
        and event.payload.state in ("qr", "pairing_code")
        and bool(event.payload.qr or event.payload.pairing_code)
    )


class EventConsumer:
    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        writer: async_sessionmaker[AsyncSession],
        name: str | None = None,
        batch: int = 64,
        block_ms: int = 2000,
        claim_idle_ms: int = 60_000,
        claim_every_s: float = 30.0,
        alerter: Alerter | None = None,
    ) -> None:
        self.redis = redis
        self.writer = writer
        self.name = name or consumer_name()
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.claim_every_s = claim_every_s
        self.alerter = alerter
        self._task: asyncio.Task[None] | None = None
        self._liveness: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def ensure_group(self) -> None:
        try:
            # From 0: events written before the api's very first start are not skipped.
            await self.redis.xgroup_create(EVENTS_STREAM, API_CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @staticmethod
    def _decode(entry_id: Any, fields: dict[Any, Any]) -> Entry:
        sid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        # A claimed entry deleted meanwhile comes without fields: acked, nothing to do.
        raw = fields.get(b"data", fields.get("data")) if fields else None
        if raw is None:
            log.error("event entry without data", extra={"stream_id": sid})
            return sid, None
        try:
            return sid, EVENT_ADAPTER.validate_json(raw)
        except ValidationError as exc:
            # Poison: it can never become valid, so it is acked and logged, not retried.
            log.error("invalid event entry", extra={"stream_id": sid, "errors": exc.errors()[:5]})
            return sid, None

    async def _persist(self, entries: list[Entry]) -> list[Alert]:
        """Commit the batch; the admin alerts its newly handled events call for."""
        alerts: list[Alert] = []
        async with self.writer() as db, db.begin():
            for sid, event in entries:
                if event is None:
                    continue
                token = trace_id_var.set(event.trace_id)
                try:
                    marked = ProcessedEvent(
                        event_id=str(event.id), event_type=event.type, stream_id=sid
                    )
                    if await insert_or_ignore(db, marked):
                        applied = await apply_event(db, event)
                        # Receivers see the session as its owner named it.
                        shown = event
                        if applied.session_name not in (None, event.session):
                            shown = event.model_copy(update={"session": applied.session_name})
                        if applied.fan_out:  # not for an inbound message seen before
                            await enqueue_deliveries(
                                db,
                                shown,
                                owner_key_id=applied.owner_key_id,
                                session_id=applied.session_id,
                            )
                        if isinstance(event, WaVersionRefusedEvent):
                            alerts.append(
                                version_refused_alert(
                                    event,
                                    session=applied.session_name,
                                    upstream=applied.upstream,
                                )
                            )
                finally:
                    trace_id_var.reset(token)
        return alerts

    async def _after_commit(self, event: Event) -> None:
        # Idempotent Redis facts; run even for replays in case the first run died here.
        if not isinstance(event, SessionStateEvent) or event.session is None:
            return
        p = event.payload
        await counters.count_reconnect(self.redis, event)  # wapp_reconnects_total, once
        if p.state == "qr" and p.qr:
            await ephemeral.store_qr(self.redis, event.session, p.qr, p.qr_expires_at)
        elif p.state == "pairing_code" and p.pairing_code:
            await ephemeral.store_pairing_code(
                self.redis, event.session, p.pairing_code, p.qr_expires_at
            )
        elif p.state in ("connected", "logged_out", "failed", "stopped"):
            await ephemeral.clear_pairing(self.redis, event.session)

    async def handle(self, raw_entries: list[tuple[Any, dict[Any, Any]]]) -> int:
        entries = [self._decode(entry_id, fields) for entry_id, fields in raw_entries]
        if not entries:
            return 0
        alerts: list[Alert] = []
        try:
            alerts = await self._persist(entries)
        except Exception:
            if len(entries) == 1:
                raise
            # Isolate the one event that fails; the others still commit and are acked.
            for entry in entries:
                try:
                    alerts += await self._persist([entry])
                except Exception:
                    log.exception("event left pending for retry", extra={"stream_id": entry[0]})
                    entries = [e for e in entries if e is not entry]
        for _, event in entries:
            if event is not None:
                await self._after_commit(event)
        for alert in alerts:
            if self.alerter is not None:
                self.alerter.alert_soon(alert)
        await self.redis.xack(EVENTS_STREAM, API_CONSUMER_GROUP, *[sid for sid, _ in entries])
        secrets = [sid for sid, event in entries if _carries_pairing_secret(event)]
        if secrets:
            await self.redis.xdel(EVENTS_STREAM, *secrets)
        return len(entries)

    async def read_once(self, block_ms: int | None = None) -> int:
        response = await self.redis.xreadgroup(
            API_CONSUMER_GROUP,
            self.name,
            {EVENTS_STREAM: ">"},
            count=self.batch,
            block=self.block_ms if block_ms is None else block_ms,
        )
        handled = 0
        for _stream, raw_entries in response or []:
            handled += await self.handle(raw_entries)
        return handled

    async def claim_stale(self) -> int:
        handled, cursor = 0, "0-0"
        while True:
            cursor_raw, raw_entries, *_ = await self.redis.xautoclaim(
                EVENTS_STREAM,
                API_CONSUMER_GROUP,
                self.name,
                self.claim_idle_ms,
                start_id=cursor,
                count=self.batch,
            )
            handled += await self.handle(raw_entries)
            cursor = cursor_raw.decode() if isinstance(cursor_raw, bytes) else str(cursor_raw)
            if cursor == "0-0":
                return handled

    async def beat(self) -> None:
        """Says this consumer is alive (see `claim_orphans`)."""
        await self.redis.set(liveness_key(self.name), b"1", ex=LIVENESS_TTL_S)

    async def _beat_quietly(self) -> None:
        try:
            await self.beat()
        except (RedisError, OSError) as exc:
            log.warning("event consumer liveness not written", extra={"error": str(exc)})

    async def _is_dead(self, name: str) -> bool:
        return process_gone(name) or not await self.redis.exists(liveness_key(name))

    async def claim_orphans(self) -> int:
        """Claim and handle what dead consumers of the group left pending, at once (no
        idle threshold), then remove them from the group. Returns the entries handled."""
        handled = 0
        for info in await self.redis.xinfo_consumers(EVENTS_STREAM, API_CONSUMER_GROUP):
            name = _text(info["name"])
            if name == self.name or not await self._is_dead(name):
                continue
            count, emptied = await self._claim_all_of(name)
            handled += count
            if emptied:  # DELCONSUMER drops its pending entries: only once there are none
                await self.redis.xgroup_delconsumer(EVENTS_STREAM, API_CONSUMER_GROUP, name)
                await self.redis.delete(liveness_key(name))
                log.info("a dead event consumer's entries were claimed", extra={"c": name})
        return handled

    async def _claim_all_of(self, name: str) -> tuple[int, bool]:
        handled, seen = 0, set[str]()
        while True:
            pending = await self.redis.xpending_range(
                EVENTS_STREAM, API_CONSUMER_GROUP, "-", "+", self.batch, consumername=name
            )
            ids = [_text(p["message_id"]) for p in pending]
            if not ids:
                return handled, True
            if seen.issuperset(ids):  # nothing moved: leave them to the idle claim
                log.warning("a dead consumer's entries could not be claimed", extra={"c": name})
                return handled, False
            seen.update(ids)
            to_claim: list[Any] = list(ids)
            claimed = await self.redis.xclaim(
                EVENTS_STREAM, API_CONSUMER_GROUP, self.name, 0, to_claim
            )
            handled += await self.handle(claimed)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_claim = 0.0
        while not self._stopping.is_set():
            try:
                if loop.time() >= next_claim:
                    await self.ensure_group()
                    await self.beat()
                    await self.claim_orphans()
                    await self.claim_stale()
                    next_claim = loop.time() + self.claim_every_s
                await self.read_once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("event consumer waiting for redis", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("event consumer batch failed; entries stay pending for retry")
                await asyncio.sleep(1.0)

    def start(self) -> None:
        self._liveness = asyncio.create_task(
            periodic.every(LIVENESS_EVERY_S, self._stopping, self._beat_quietly),
            name="wapp-event-consumer-liveness",
        )
        self._task = asyncio.create_task(self.run(), name="wapp-event-consumer")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._liveness is not None:
            await self._liveness
            self._liveness = None
            # What it left pending (a batch cut short) is for the next consumer at once.
            with contextlib.suppress(RedisError, OSError):
                await self.redis.delete(liveness_key(self.name))
