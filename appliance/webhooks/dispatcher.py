"""The dispatcher: sends due outbox rows, retries, dead-letters. One per api worker.

Endpoints are leased (`webhooks.lease_owner/lease_until`, claimed with one conditional
UPDATE, atomic on SQLite and on Postgres): at any time one worker sends an endpoint's
deliveries, so per-endpoint concurrency and per-(endpoint, session) order hold across
workers. A crashed worker's endpoints are taken over when its lease expires; what it
had sent but not recorded is sent again with the same `webhook-id` (at least once).

A deleted endpoint gets nothing more: the worker that deletes it calls `forget` (its
in-flight posts are cancelled at once), and every worker checks, each poll, that the
endpoints it is sending to still exist (a delete made by another worker or the CLI, or
by cascade with a session or key, stops their posts within `poll_interval_s`). Outcomes
of a vanished endpoint are dropped when recorded (`recorder`), never failing the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.db.models import Webhook, WebhookDelivery
from appliance.db.types import utcnow
from appliance.security.keyring import MasterKeyring
from appliance.settings import WebhooksSettings
from appliance.webhooks import pairing, recorder, signing, ssrf
from appliance.webhooks.crypto import SecretBox
from appliance.webhooks.http_client import HTTP_ERRORS, EndpointClient
from appliance.webhooks.recorder import Outcome
from appliance.webhooks.service import signing_secrets
from appliance.webhooks.verdicts import Row, classify

log = logging.getLogger("appliance.webhooks")

_DELIVERIES = WebhookDelivery.__table__  # type: ignore[attr-defined]
_WEBHOOKS = Webhook.__table__  # type: ignore[attr-defined]
# A literal, not a bound parameter: only then may SQLite and Postgres read the partial
# index of pending rows (`ix_webhook_deliveries_pending`).
PENDING = sa.text("webhook_deliveries.status = 'pending'")
# How long a deleted endpoint's id is remembered: longer than any round that had already
# read its rows can take to start its posts.
_GONE_KEPT_S = 600.0


class Dispatcher:
    """`start()` in the api lifespan, `await stop()` on shutdown."""

    def __init__(
        self,
        settings: WebhooksSettings,
        *,
        writer: async_sessionmaker[AsyncSession],
        reader: async_sessionmaker[AsyncSession],
        master_key: bytes | MasterKeyring,
        owner: str | None = None,
    ) -> None:
        """`writer`/`reader`: the api's session makers (AppState.writer and .reader); reads
        must not queue behind SQLite's one writer."""
        self.settings = settings
        self.sessions = writer
        self.readers = reader
        self.box = SecretBox(master_key)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._global = asyncio.Semaphore(settings.max_concurrency)
        self._endpoints: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._clients: dict[str, EndpointClient] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # Group commit: endpoints hand their outcomes to one writer, which records what
        # has accumulated in one transaction (few write transactions however many endpoints).
        self._queue: list[tuple[str, list[Outcome], asyncio.Future[None]]] = []
        self._queued = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        # Each endpoint's round of sends in flight (what `forget` cancels), and endpoints
        # known deleted (monotonic time of the news): nothing more is posted to those.
        self._rounds: dict[str, asyncio.Future[list[list[Outcome]]]] = {}
        self._gone: dict[str, float] = {}
        self._next_sweep = 0.0

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        if self._task is not None:
            return
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="wapp-webhook-dispatcher")
        self._writer = asyncio.create_task(self._write_loop(), name="wapp-webhook-recorder")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let in-flight sends finish (up to `timeout_s`), record them, release the leases."""
        self._stopping.set()
        tasks = [t for t in [self._task, *self._endpoints.values()] if t is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._task = None
        self._endpoints.clear()
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        with contextlib.suppress(Exception):
            await self._release_leases()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
        await asyncio.gather(*self._closing, return_exceptions=True)

    def forget(self, webhook_id: str) -> None:
        """The endpoint is deleted: cancel its posts in flight, post nothing more to it.

        Posts already on the wire may reach the receiver; none starts after this call.
        """
        now = time.monotonic()
        self._gone = {k: t for k, t in self._gone.items() if now - t < _GONE_KEPT_S}
        self._gone[webhook_id] = now
        sends = self._rounds.pop(webhook_id, None)
        if sends is not None:
            sends.cancel()
        client = self._clients.pop(webhook_id, None)
        if client is not None:
            close = asyncio.create_task(client.aclose(), name=f"wapp-webhook-close-{webhook_id}")
            self._closing.add(close)
            close.add_done_callback(self._closing.discard)

    async def _forget_deleted(self) -> None:
        """Forget the endpoints we send to that were deleted elsewhere (another worker,
        the CLI, a cascade from a deleted session or key)."""
        busy = [w for w, t in self._endpoints.items() if not t.done() and w not in self._gone]
        if not busy:
            return
        async with self.readers() as db:
            found = set(
                (await db.execute(sa.select(_WEBHOOKS.c.id).where(_WEBHOOKS.c.id.in_(busy))))
                .scalars()
                .all()
            )
        for webhook_id in busy:
            if webhook_id not in found:
                log.info("webhook %s was deleted: its deliveries stop", webhook_id)
                self.forget(webhook_id)

    # --- the loop ------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._forget_deleted()
                await self._sweep_pairing()
                for webhook_id in await self._claim():
                    task = self._endpoints.get(webhook_id)
                    if task is None or task.done():
                        self._endpoints[webhook_id] = asyncio.create_task(
                            self._serve_endpoint(webhook_id), name=f"wapp-webhook-{webhook_id}"
                        )
            except Exception:
                log.exception("webhook dispatcher: a polling round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.poll_interval_s)

    async def _sweep_pairing(self) -> None:
        """Every `pairing.SWEEP_S`; a failure is logged and never holds up the sends."""
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + pairing.SWEEP_S
        try:
            await pairing.sweep(self.readers, self.sessions)
        except Exception:
            log.exception("webhook dispatcher: sweeping expired pairing deliveries failed")

    async def _claim(self) -> list[str]:
        """Lease (or renew) the enabled endpoints that have due deliveries.

        A read first: the write (on SQLite the one write lock) happens only when there is
        an endpoint to take, or when our leases are a third of the way to expiring.
        """
        now = utcnow()
        renew_by = now + timedelta(seconds=self.settings.lease_s * 2 / 3)
        async with self.readers() as db:
            rows = (
                await db.execute(
                    sa.select(_WEBHOOKS.c.id, _WEBHOOKS.c.lease_owner, _WEBHOOKS.c.lease_until)
                    .where(_WEBHOOKS.c.enabled.is_(True))
                    .where(
                        sa.select(sa.literal(1))
                        .select_from(_DELIVERIES)
                        .where(
                            _DELIVERIES.c.webhook_id == _WEBHOOKS.c.id,
                            PENDING,
                            _DELIVERIES.c.next_attempt_at <= now,
                        )
                        .exists()
                    )
                )
            ).all()
        held: list[str] = []
        renew: list[str] = []
        free: list[str] = []
        for webhook_id, owner, until in rows:
            if owner == self.owner and until is not None and until > renew_by:
                held.append(str(webhook_id))
            elif owner == self.owner:
                renew.append(str(webhook_id))
            elif until is None or until < now:
                free.append(str(webhook_id))
        # At most one new endpoint per round: several workers polling take turns, so
        # endpoints spread over them instead of the first to look taking them all.
        wanted = renew + ([random.choice(free)] if free else [])
        if not wanted:
            return held
        until = now + timedelta(seconds=self.settings.lease_s)
        stmt = (
            sa.update(_WEBHOOKS)
            .where(
                _WEBHOOKS.c.id.in_(wanted),
                _WEBHOOKS.c.enabled.is_(True),
                sa.or_(
                    _WEBHOOKS.c.lease_owner == self.owner,
                    _WEBHOOKS.c.lease_until.is_(None),
                    _WEBHOOKS.c.lease_until < now,
                ),
            )
            .values(lease_owner=self.owner, lease_until=until)
            .returning(_WEBHOOKS.c.id)
        )
        async with self.sessions.begin() as db:
            return held + [str(r) for r in (await db.execute(stmt)).scalars().all()]

    async def _release_leases(self) -> None:
        async with self.sessions.begin() as db:
            await db.execute(
                sa.update(_WEBHOOKS)
                .where(_WEBHOOKS.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=None)
            )

    # --- one endpoint --------------------------------------------------------------

    async def _serve_endpoint(self, webhook_id: str) -> None:
        """Send this endpoint's due rows round after round, until none is due or we stop."""
        try:
            while not self._stopping.is_set():
                async with self.readers() as db:
                    hook = await db.get(Webhook, webhook_id)
                    if hook is None or not hook.enabled or hook.lease_owner != self.owner:
                        return
                    groups = await self._due_groups(db, webhook_id)
                if not groups:
                    return
                if webhook_id in self._gone:
                    return
                secrets = signing_secrets(self.box, hook, utcnow())
                per_endpoint = asyncio.Semaphore(self.settings.per_endpoint_concurrency)
                sends = asyncio.gather(
                    *(self._send_group(hook, secrets, rows, per_endpoint) for rows in groups)
                )
                self._rounds[webhook_id] = sends
                try:
                    results = await sends
                except asyncio.CancelledError:
                    if webhook_id in self._gone and not _cancelling():
                        return  # deleted (`forget`): nothing to record, nothing more to send
                    raise
                finally:
                    if self._rounds.get(webhook_id) is sends:
                        del self._rounds[webhook_id]
                outcomes = [o for group in results for o in group]
                await self._record(webhook_id, outcomes)
                if any(o.disable_endpoint for o in outcomes):
                    return
        except Exception:
            log.exception("webhook dispatcher: endpoint %s failed", webhook_id)

    async def _due_groups(self, db: AsyncSession, webhook_id: str) -> list[list[Row]]:
        """Due rows grouped by session, oldest first; a session whose oldest pending row
        is waiting for a retry sends nothing newer (per-session order)."""
        now = utcnow()
        # Each waiting session's oldest waiting row. Not a GROUP BY: that would lead the
        # planners to an index over every row the endpoint ever had.
        blocked: dict[str | None, datetime] = {}
        waiting = await db.execute(
            sa.select(_DELIVERIES.c.session, _DELIVERIES.c.created_at).where(
                _DELIVERIES.c.webhook_id == webhook_id,
                PENDING,
                _DELIVERIES.c.next_attempt_at > now,
            )
        )
        for session, created in waiting.tuples():
            if session not in blocked or _aware(created) < blocked[session]:
                blocked[session] = _aware(created)
        rows = (
            await db.execute(
                sa.select(
                    _DELIVERIES.c.id,
                    _DELIVERIES.c.event_id,
                    _DELIVERIES.c.session,
                    _DELIVERIES.c.payload,
                    _DELIVERIES.c.attempts,
                    _DELIVERIES.c.created_at,
                )
                .where(
                    _DELIVERIES.c.webhook_id == webhook_id,
                    PENDING,
                    _DELIVERIES.c.next_attempt_at <= now,
                )
                .order_by(_DELIVERIES.c.created_at, _DELIVERIES.c.id)
                .limit(self.settings.batch_size)
            )
        ).all()
        groups: dict[str | None, list[Row]] = {}
        for r in rows:
            created = r.created_at
            first_blocked = blocked.get(r.session)
            if first_blocked is not None and first_blocked < _aware(created):
                continue
            groups.setdefault(r.session, []).append(
                Row(r.id, r.event_id, r.session, r.payload, r.attempts, _aware(created))
            )
        return list(groups.values())

    async def _send_group(
        self, hook: Webhook, secrets: list[str], rows: list[Row], per_endpoint: asyncio.Semaphore
    ) -> list[Outcome]:
        """One session's rows in order; stop at the first that is not delivered."""
        outcomes: list[Outcome] = []
        async with per_endpoint:
            for row in rows:
                async with self._global:
                    if hook.id in self._gone:
                        break
                    outcome = await self._send_one(hook, secrets, row)
                outcomes.append(outcome)
                if outcome.verdict != "delivered":
                    break
        return outcomes

    def _client(self, webhook_id: str) -> EndpointClient:
        client = self._clients.get(webhook_id)
        if client is None:
            client = EndpointClient(
                self.settings.per_endpoint_concurrency,
                allow_private=self.settings.allow_private,
            )
            self._clients[webhook_id] = client
        return client

    async def _send_one(self, hook: Webhook, secrets: list[str], row: Row) -> Outcome:
        outcome = await self._try(hook, secrets, row)
        if outcome.verdict != "retry" and pairing.is_pairing(row.payload):
            # Over (delivered, failed or dead): the QR's secret leaves the row with it.
            outcome.replace_payload = pairing.redacted(row.payload)
        return outcome

    async def _try(self, hook: Webhook, secrets: list[str], row: Row) -> Outcome:
        now = utcnow()
        if pairing.is_pairing(row.payload) and pairing.expired(row.payload, row.created_at, now):
            return Outcome(row.id, row.attempts + 1, now, None, 0, pairing.EXPIRED_ERROR, "dead")
        body = orjson.dumps(row.payload)
        headers = signing.headers(secrets, row.event_id, int(now.timestamp()), body)
        started = time.perf_counter()
        code: int | None = None
        retry_after: str | None = None
        error: str | None = None
        try:
            # The SSRF guard runs as each connection is opened (`http_client`).
            reply = await self._client(hook.id).post(
                hook.url, body, headers, timeout_s=self.settings.timeout_s
            )
            code = reply.status
            retry_after = reply.headers.get("retry-after")
            if not 200 <= code < 300:
                error = reply.text[:500] or None
        except ssrf.BlockedAddress as exc:
            latency = int((time.perf_counter() - started) * 1000)
            out = Outcome(row.id, row.attempts + 1, now, None, latency, exc.message, "failed")
            return out
        except HTTP_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        latency = int((time.perf_counter() - started) * 1000)
        return classify(
            row,
            status_code=code,
            retry_after=retry_after,
            error=error,
            latency_ms=latency,
            at=utcnow(),
            settings=self.settings,
        )

    async def _record(self, webhook_id: str, outcomes: list[Outcome]) -> None:
        """Hand a round's outcomes to the recorder; returns once they are committed."""
        if not outcomes:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((webhook_id, outcomes, done))
        self._queued.set()
        await done

    async def _write_loop(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            batch, self._queue = self._queue, []
            try:
                await self._write(batch)
            except Exception as exc:
                log.exception("webhook dispatcher: recording outcomes failed")
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def _write(self, batch: list[tuple[str, list[Outcome], asyncio.Future[None]]]) -> None:
        """Every queued outcome and attempt, in one short transaction; outcomes of an
        endpoint deleted meanwhile are dropped there, the others recorded."""
        await recorder.record(
            self.sessions, [(hook_id, outcomes) for hook_id, outcomes, _ in batch]
        )


def _cancelling() -> bool:
    """Whether the running task itself is being cancelled (not only what it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _aware(value: datetime) -> datetime:
    return value if value.utcoffset() is not None else value.replace(tzinfo=UTC)
