"""The api's consumer group on `wapp:events`: persist, fan out to webhooks, then XACK.

Each batch is one transaction: the processed-event marks, the applied state and the
webhook outbox rows commit together, and only then are the entries acked. A crash
before the ack redelivers the batch; the processed-event marks make that a no-op. With
several uvicorn workers each runs one consumer of the same group, so every event is
handled by one of them. Entries a dead consumer left pending are claimed after
`claim_idle_ms`.
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

from appliance.contracts import EVENT_ADAPTER, Event, SessionStateEvent
from appliance.db.models import ProcessedEvent
from appliance.db.statements import insert_or_ignore
from appliance.events import ephemeral
from appliance.events.apply import apply_event
from appliance.logs import trace_id_var
from appliance.redis_keys import API_CONSUMER_GROUP, EVENTS_STREAM
from appliance.webhooks.outbox import enqueue_deliveries

log = logging.getLogger("appliance.events")

Entry = tuple[str, Event | None]


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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
    ) -> None:
        self.redis = redis
        self.writer = writer
        self.name = name or consumer_name()
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.claim_every_s = claim_every_s
        self._task: asyncio.Task[None] | None = None
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
        raw = fields.get(b"data", fields.get("data"))
        if raw is None:
            log.error("event entry without data", extra={"stream_id": sid})
            return sid, None
        try:
            return sid, EVENT_ADAPTER.validate_json(raw)
        except ValidationError as exc:
            # Poison: it can never become valid, so it is acked and logged, not retried.
            log.error("invalid event entry", extra={"stream_id": sid, "errors": exc.errors()[:5]})
            return sid, None

    async def _persist(self, entries: list[Entry]) -> None:
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
                        await enqueue_deliveries(
                            db,
                            event,
                            owner_key_id=applied.owner_key_id,
                            session_id=applied.session_id,
                        )
                finally:
                    trace_id_var.reset(token)

    async def _after_commit(self, event: Event) -> None:
        # Idempotent Redis facts; run even for replays in case the first run died here.
        if not isinstance(event, SessionStateEvent) or event.session is None:
            return
        p = event.payload
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
        try:
            await self._persist(entries)
        except Exception:
            if len(entries) == 1:
                raise
            # Isolate the one event that fails; the others still commit and are acked.
            for entry in entries:
                try:
                    await self._persist([entry])
                except Exception:
                    log.exception("event left pending for retry", extra={"stream_id": entry[0]})
                    entries = [e for e in entries if e is not entry]
        for _, event in entries:
            if event is not None:
                await self._after_commit(event)
        await self.redis.xack(EVENTS_STREAM, API_CONSUMER_GROUP, *[sid for sid, _ in entries])
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

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_claim = 0.0
        while not self._stopping.is_set():
            try:
                if loop.time() >= next_claim:
                    await self.ensure_group()
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
        self._task = asyncio.create_task(self.run(), name="wapp-event-consumer")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
