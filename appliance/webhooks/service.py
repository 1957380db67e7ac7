"""Webhook endpoints: create, list, update, delete, rotate, replay, deliveries, test.

Routes and CLI call these with keyword-only arguments. `owner` is the calling key's
scope: `None` for an admin (sees everything), a key id for a tenant (sees only its own;
another tenant's ids are `NotFound`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance.db.models import (
    Webhook,
    WebhookDelivery,
    WebhookDeliveryAttempt,
)
from appliance.db.types import new_id, utcnow
from appliance.errors import NotFound, ValidationFailed
from appliance.services import session_names
from appliance.settings import WebhooksSettings
from appliance.webhooks import signing, ssrf
from appliance.webhooks.crypto import SecretBox, new_secret
from appliance.webhooks.http_client import HTTP_ERRORS, EndpointClient

Sessions = async_sessionmaker[AsyncSession]
ALL = object()


@dataclass(frozen=True)
class Scope:
    """Who asks: `key_id` None is an admin (everything); else a tenant's own only."""

    key_id: str | None
    is_admin: bool

    def sees(self, hook: Webhook) -> bool:
        return self.is_admin or hook.owner_key_id == self.key_id


@dataclass(frozen=True)
class Created:
    webhook: Webhook
    secret: str


def signing_secrets(box: SecretBox, hook: Webhook, now: datetime) -> list[str]:
    out = [box.decrypt(hook.secret_encrypted)]
    expires = hook.previous_secret_expires_at
    if hook.previous_secret_encrypted and expires is not None and expires > now:
        out.append(box.decrypt(hook.previous_secret_encrypted))
    return out


async def _get(db: AsyncSession, scope: Scope, webhook_id: str) -> Webhook:
    hook = await db.get(Webhook, webhook_id)
    if hook is None or not scope.sees(hook):
        raise NotFound(f"no webhook {webhook_id}", details={"webhookId": webhook_id})
    return hook


async def _session_id(db: AsyncSession, scope: Scope, session: str) -> str:
    """A session by id or name that the scope may see."""
    # Names are per key (services/session_names): resolved as the caller sees them.
    query = session_names.find(session, key_id=scope.key_id, is_admin=scope.is_admin)
    row = (await db.scalars(query)).first()
    if row is None or not (scope.is_admin or row.owner_key_id == scope.key_id):
        raise NotFound(f"no session {session}", details={"session": session})
    return row.id


async def create_webhook(
    sessions: Sessions,
    *,
    scope: Scope,
    box: SecretBox,
    settings: WebhooksSettings,
    url: str,
    session: str | None = None,
    event_types: list[str] | None = None,
    enabled: bool = True,
) -> Created:
    await ssrf.check_url(url, allow_private=settings.allow_private)
    if event_types is not None and not event_types:
        raise ValidationFailed("eventTypes must list at least one type, or be null for all")
    secret = new_secret()
    async with sessions.begin() as db:
        session_id = await _session_id(db, scope, session) if session else None
        hook = Webhook(
            owner_key_id=scope.key_id,
            session_id=session_id,
            url=url,
            event_types=sorted(set(event_types)) if event_types else None,
            secret_encrypted=box.encrypt(secret),
            enabled=enabled,
        )
        db.add(hook)
    return Created(hook, secret)


async def list_webhooks(sessions: Sessions, *, scope: Scope) -> list[Webhook]:
    async with sessions() as db:
        stmt = sa.select(Webhook).order_by(col(Webhook.created_at), col(Webhook.id))
        if not scope.is_admin:
            stmt = stmt.where(col(Webhook.owner_key_id) == scope.key_id)
        return list((await db.execute(stmt)).scalars().all())


async def get_webhook(sessions: Sessions, *, scope: Scope, webhook_id: str) -> Webhook:
    async with sessions() as db:
        return await _get(db, scope, webhook_id)


async def update_webhook(
    sessions: Sessions,
    *,
    scope: Scope,
    settings: WebhooksSettings,
    webhook_id: str,
    url: str | None = None,
    event_types: list[str] | object | None = ALL,
    enabled: bool | None = None,
) -> Webhook:
    if url is not None:
        await ssrf.check_url(url, allow_private=settings.allow_private)
    async with sessions.begin() as db:
        hook = await _get(db, scope, webhook_id)
        if url is not None:
            hook.url = url
        if event_types is not ALL:
            if isinstance(event_types, list):
                if not event_types:
                    raise ValidationFailed("eventTypes must list at least one type, or be null")
                hook.event_types = sorted({str(t) for t in event_types})
            else:
                hook.event_types = None
        if enabled is not None:
            hook.enabled = enabled
            hook.disabled_reason = None if enabled else "disabled by a user"
        hook.updated_at = utcnow()
    return hook


async def delete_webhook(sessions: Sessions, *, scope: Scope, webhook_id: str) -> None:
    """Delete the endpoint, its pending deliveries and its history, in one transaction.

    The endpoint row is locked first (Postgres; SQLite's BEGIN IMMEDIATE serialises
    anyway): a dispatcher recording outcomes share-locks its endpoints first too
    (`recorder.live_endpoints`), so the two wait for each other instead of deadlocking,
    and the recorder never writes rows that reference a deleted endpoint. The caller
    stops the dispatchers' posts (`Dispatcher.forget`).
    """
    async with sessions.begin() as db:
        hook = await db.get(Webhook, webhook_id, with_for_update=True)
        if hook is None or not scope.sees(hook):
            raise NotFound(f"no webhook {webhook_id}", details={"webhookId": webhook_id})
        await db.execute(
            sa.delete(WebhookDeliveryAttempt).where(
                col(WebhookDeliveryAttempt.webhook_id) == hook.id
            )
        )
        await db.execute(
            sa.delete(WebhookDelivery).where(col(WebhookDelivery.webhook_id) == hook.id)
        )
        await db.delete(hook)


async def rotate_secret(
    sessions: Sessions,
    *,
    scope: Scope,
    box: SecretBox,
    settings: WebhooksSettings,
    webhook_id: str,
    overlap_s: float | None = None,
) -> Created:
    """A new secret; the current one keeps signing for the overlap window."""
    overlap = settings.rotation_overlap_s if overlap_s is None else overlap_s
    secret = new_secret()
    async with sessions.begin() as db:
        hook = await _get(db, scope, webhook_id)
        now = utcnow()
        hook.previous_secret_encrypted = hook.secret_encrypted if overlap > 0 else None
        hook.previous_secret_expires_at = now + timedelta(seconds=overlap) if overlap > 0 else None
        hook.secret_encrypted = box.encrypt(secret)
        hook.updated_at = now
    return Created(hook, secret)


async def replay(
    sessions: Sessions, *, scope: Scope, webhook_id: str, since: datetime, include_delivered: bool
) -> int:
    """Send again every delivery of events since `since` (same webhook-id), in their order.

    Rows go back to `pending` with a fresh retry window; pending ones are left alone.
    """
    statuses = ["failed", "dead"] + (["delivered"] if include_delivered else [])
    async with sessions.begin() as db:
        hook = await _get(db, scope, webhook_id)
        rows = (
            (
                await db.execute(
                    sa.select(col(WebhookDelivery.id))
                    .where(
                        col(WebhookDelivery.webhook_id) == hook.id,
                        col(WebhookDelivery.event_at) >= since,
                        col(WebhookDelivery.status).in_(statuses),
                    )
                    .order_by(col(WebhookDelivery.event_at), col(WebhookDelivery.created_at))
                )
            )
            .scalars()
            .all()
        )
        now = utcnow()
        for i, delivery_id in enumerate(rows):
            # created_at orders sending and starts the retry window: keep the events' order.
            at = now + timedelta(microseconds=i)
            await db.execute(
                sa.update(WebhookDelivery)
                .where(col(WebhookDelivery.id) == delivery_id)
                .values(
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=at,
                    updated_at=now,
                    delivered_at=None,
                )
            )
    return len(rows)


@dataclass(frozen=True)
class DeliveryView:
    delivery: WebhookDelivery
    attempts: list[WebhookDeliveryAttempt]


async def list_deliveries(
    sessions: Sessions,
    *,
    scope: Scope,
    webhook_id: str,
    status: str | None = None,
    limit: int = 50,
    before: datetime | None = None,
) -> list[DeliveryView]:
    """Newest first, each with its attempts (status code, latency, error)."""
    async with sessions() as db:
        hook = await _get(db, scope, webhook_id)
        stmt = (
            sa.select(WebhookDelivery)
            .where(col(WebhookDelivery.webhook_id) == hook.id)
            .order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id).desc())
            .limit(limit)
        )
        if status is not None:
            stmt = stmt.where(col(WebhookDelivery.status) == status)
        if before is not None:
            stmt = stmt.where(col(WebhookDelivery.created_at) < before)
        deliveries = list((await db.execute(stmt)).scalars().all())
        attempts: dict[str, list[WebhookDeliveryAttempt]] = {d.id: [] for d in deliveries}
        if deliveries:
            rows = (
                (
                    await db.execute(
                        sa.select(WebhookDeliveryAttempt)
                        .where(col(WebhookDeliveryAttempt.delivery_id).in_(list(attempts)))
                        .order_by(
                            col(WebhookDeliveryAttempt.at), col(WebhookDeliveryAttempt.attempt)
                        )
                    )
                )
                .scalars()
                .all()
            )
            for a in rows:
                attempts[a.delivery_id].append(a)
    return [DeliveryView(d, attempts[d.id]) for d in deliveries]


@dataclass(frozen=True)
class TestResult:
    event_id: str
    status_code: int | None
    latency_ms: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def send_test(
    sessions: Sessions,
    *,
    scope: Scope,
    box: SecretBox,
    settings: WebhooksSettings,
    webhook_id: str,
) -> TestResult:
    """Send a signed `webhook.test` event now (not through the outbox) and report the answer."""
    hook = await get_webhook(sessions, scope=scope, webhook_id=webhook_id)
    event_id = new_id()
    now = utcnow()
    body = orjson.dumps(
        {
            "id": event_id,
            "type": "webhook.test",
            "timestamp": now.isoformat(),
            "session": None,
            "data": {"webhookId": hook.id},
        }
    )
    headers = signing.headers(signing_secrets(box, hook, now), event_id, int(now.timestamp()), body)
    started = time.perf_counter()
    # The dispatcher's client: the same connection-time SSRF guard as real deliveries.
    client = EndpointClient(1, allow_private=settings.allow_private)
    try:
        reply = await client.post(hook.url, body, headers, timeout_s=settings.timeout_s)
        code: int | None = reply.status
        error = None if 200 <= reply.status < 300 else reply.text[:500]
    except ssrf.BlockedAddress as exc:
        code, error = None, exc.message
    except HTTP_ERRORS as exc:
        code, error = None, f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    latency = int((time.perf_counter() - started) * 1000)
    return TestResult(event_id, code, latency, error)
