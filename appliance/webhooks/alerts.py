"""Admin alerts: a session going `logged_out` or `failed`, the engine restarting, or
WhatsApp refusing the engine's WhatsApp Web version.

Sent to `webhooks.alert_webhook_url` (JSON) and, when SMTP is configured, by email to
`webhooks.alert_email_to`. The `Alerter` scans session states itself; engine restarts
come from `engine_restarts.EngineRestartMonitor`, through `Alerter.alert()`; version
refusals from the event consumer, through `Alerter.alert_soon()` (`version_refused_alert`).
One alert per subject (`session:{name}`, `engine:{upstream}`, `wa-version:{upstream}`) per
`alert_min_interval_s` at most, so a flapping session, an engine restarting in a loop or
fifty sessions refused alike cannot flood: the limit is a Redis key with that TTL, shared
by every api worker.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance import redis_keys
from appliance.contracts import WaVersionRefusedEvent
from appliance.db.models import Session
from appliance.db.types import utcnow
from appliance.periodic import every
from appliance.settings import WebhooksSettings

log = logging.getLogger("appliance.webhooks.alerts")

ALERT_STATES = ("logged_out", "failed")


@dataclass(frozen=True)
class Alert:
    # session.logged_out | session.failed | session.version_refused | engine.recycled, and
    # from the watchdog api.recycled | recycle.blocked | redis.memory_high
    kind: str
    # What the rate limit is keyed on: session:{name}, engine:{upstream}, wa-version:{upstream}
    subject: str
    message: str
    at: datetime
    details: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {
            "type": f"alert.{self.kind}",
            "subject": self.subject,
            "message": self.message,
            "timestamp": self.at.isoformat(),
            "details": self.details,
        }


def version_refused_advice(source: str) -> str:
    """What the operator should do, by where the refused version came from."""
    if source == "fetched":
        # Freshly read from wa_version_url and still refused: WhatsApp is ahead of that page.
        return (
            "the engine fetches the current version again (at most once a minute); "
            "if logins stay refused, upgrade wapp"
        )
    return (
        "the engine could not fetch the current version from [engine] wa_version_url and "
        f"uses the {source} one: check the box reaches that URL "
        "(wapp logs engine | grep wa-version), then wapp restart engine; "
        "if logins stay refused, upgrade wapp"
    )


def version_refused_alert(
    event: WaVersionRefusedEvent, *, session: str | None, upstream: str | None
) -> Alert:
    """The `session.version_refused` alert: WhatsApp refused a login (failure 405) because
    the client's WhatsApp Web version is too old. Keyed on the engine (every session of it
    announces the same version and is refused alike), not on the session."""
    p = event.payload
    engine = upstream or "unknown"
    advice = version_refused_advice(p.source)
    return Alert(
        kind="session.version_refused",
        subject=f"wa-version:{engine}",
        message=(
            f"WhatsApp refused the login of session {session or event.session}: "
            f"WhatsApp Web version {p.version} ({p.source}) is too old; {advice}"
        ),
        at=event.timestamp,
        details={
            "session": session or event.session,
            "upstream": upstream,
            "version": p.version,
            "source": p.source,
            "reasonCode": p.reason_code,
            "reason": p.reason,
            "action": advice,
        },
    )


class RateLimiter:
    """At most one alert per subject per interval, across processes (Redis)."""

    def __init__(self, redis: aioredis.Redis, interval_s: float) -> None:
        self.redis = redis
        self.interval_s = interval_s

    async def allow(self, subject: str) -> bool:
        if self.interval_s <= 0:
            return True
        ms = max(1, int(self.interval_s * 1000))
        return bool(
            await self.redis.set(redis_keys.alert_interval_key(subject), "1", nx=True, px=ms)
        )


class Alerter:
    """Watches session states and sends admin alerts; `alert()` for other sources."""

    def __init__(
        self,
        settings: WebhooksSettings,
        # None: only `alert()` is used (the watchdog), never the session scan.
        reader: async_sessionmaker[AsyncSession] | None,
        redis: aioredis.Redis,
        *,
        scan_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.sessions = reader
        self.limiter = RateLimiter(redis, settings.alert_min_interval_s)
        self.scan_s = scan_s
        self.sent: list[Alert] = []
        self._since = utcnow() - timedelta(seconds=scan_s)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._sending: set[asyncio.Task[int]] = set()

    @property
    def configured(self) -> bool:
        s = self.settings
        return bool(s.alert_webhook_url or (s.alert_email_to and s.smtp_host))

    def start(self) -> None:
        if self.configured and self._task is None:
            self._task = asyncio.create_task(self._run(), name="wapp-admin-alerts")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        # Alerts already handed over still go out (each bounded by the webhook timeout).
        await self.flush()

    async def flush(self) -> None:
        """Wait until every alert handed to `alert_soon` so far was sent (or failed)."""
        await asyncio.gather(*self._sending, return_exceptions=True)

    def alert_soon(self, alert: Alert) -> bool:
        """Send `alert` in the background: the caller (the event consumer) must not wait
        for a slow alert receiver. False when not sent at all (no channel, or stopping)."""
        if not self.configured:
            return False
        if self._stopping.is_set():
            log.warning("admin alert not sent, the api is stopping: %s", alert.message)
            return False
        task = asyncio.create_task(self._alert_logged(alert), name=f"wapp-alert-{alert.kind}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        return True

    async def _alert_logged(self, alert: Alert) -> int:
        try:
            return await self.alert(alert)
        except Exception:  # Redis down for the rate limit: logged, as a failed post is
            log.exception("admin alert failed: %s", alert.message)
            return 0

    async def _run(self) -> None:
        await every(self.scan_s, self._stopping, self._scan_logged)

    async def _scan_logged(self) -> None:
        try:
            await self.scan()
        except Exception:  # the next scan tries again
            log.exception("admin alerts: scan failed")

    async def scan(self) -> int:
        """Alert on sessions that entered an alert state since the last scan."""
        if self.sessions is None:
            return 0
        async with self.sessions() as db:
            rows = (
                (
                    await db.execute(
                        sa.select(Session)
                        .where(
                            col(Session.state).in_(ALERT_STATES),
                            col(Session.state_changed_at) > self._since,
                        )
                        .order_by(col(Session.state_changed_at))
                    )
                )
                .scalars()
                .all()
            )
        sent = 0
        for s in rows:
            self._since = max(self._since, s.state_changed_at)
            alert = Alert(
                kind=f"session.{s.state}",
                subject=f"session:{s.name}",
                message=f"session {s.name} is {s.state}: {s.state_reason or 'no reason given'}",
                at=s.state_changed_at,
                details={"session": s.name, "state": s.state, "reason": s.state_reason},
            )
            sent += await self.alert(alert)
        return sent

    async def alert(self, alert: Alert) -> int:
        """Send unless rate-limited; 1 when sent (to at least one channel)."""
        if not await self.limiter.allow(alert.subject):
            log.info("admin alert rate-limited: %s", alert.message)
            return 0
        ok = False
        if self.settings.alert_webhook_url:
            try:
                async with httpx.AsyncClient(timeout=self.settings.timeout_s) as client:
                    response = await client.post(self.settings.alert_webhook_url, json=alert.body())
                ok = response.is_success or ok
            except httpx.HTTPError as exc:
                log.warning("admin alert webhook failed: %s", exc)
        if self.settings.alert_email_to and self.settings.smtp_host:
            try:
                await self._email(alert)
                ok = True
            except (aiosmtplib.SMTPException, OSError) as exc:
                log.warning("admin alert email failed: %s", exc)
        if ok:
            self.sent.append(alert)
        return int(ok)

    async def _email(self, alert: Alert) -> None:
        s = self.settings
        msg = EmailMessage()
        msg["From"] = s.alert_email_from
        msg["To"] = s.alert_email_to
        msg["Subject"] = f"[wapp] {alert.message}"[:200]
        msg.set_content(f"{alert.message}\n\nat {alert.at.isoformat()}\n{alert.details}\n")
        await aiosmtplib.send(
            msg,
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password,
            start_tls=s.smtp_starttls,
            timeout=s.timeout_s,
        )
