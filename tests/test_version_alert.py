# ruff: noqa: F811  (the post_receiver fixture is requested by name)
"""`session.version_refused` (WhatsApp refused the client's WhatsApp Web version, 405):
an admin alert naming the cause, the version and what to do, and the cause in the state
reason the API shows.

The events are published to a real Redis as the engine publishes them (after the close's
own `session.state`, engine/src/upstream/version.ts); the api's consumer persists them in
a real database and the alert goes to a real HTTP receiver. The last test runs the real
supervised stack: the sandbox engine logs in to the simulator refusing its version
(`POST /faults/min-version`), as engine/test/engine/wa-version.test.ts does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from appliance.api.app import create_app
from appliance.auth import api_keys
from appliance.contracts import (
    EngineHeartbeat,
    Event,
    SessionStateEvent,
    SessionStatePayload,
    Upstream,
    WaVersionRefusedEvent,
    WaVersionRefusedPayload,
)
from appliance.db.engine import create_sessionmaker
from appliance.db.models import Session, WebhookDelivery
from appliance.events.consumer import EventConsumer
from appliance.redis_keys import EVENTS_STREAM, engine_heartbeat_key
from appliance.security.master_key import create_master_key
from appliance.settings import Settings, load_settings
from appliance.webhooks.alerts import Alerter
from tests.fixtures.api import auth, running_api
from tests.fixtures.post_receiver import PostReceiver, post_receiver  # noqa: F401
from tests.fixtures.settings import MakeSettings
from tests.fixtures.stack import StackDir, start_stack
from tests.fixtures.waiting import wait_for

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
OLD = "2.3000.1023456789"
CLOSE = "closed: Connection Failure"


def refusal_reason(version: str = OLD, source: str = "pinned") -> str:
    """The reason the engine writes (version.ts `refused`)."""
    return (
        f"WhatsApp refused the login: client version {version} ({source}) is outdated "
        "(Connection Failure)"
    )


def closed(session: str, at: datetime, state: str = "reconnecting", reason: str = CLOSE) -> Event:
    payload = SessionStatePayload(state=state, reason=reason, reason_code=405)  # type: ignore[arg-type]
    return SessionStateEvent(session=session, timestamp=at, payload=payload)


def refused(session: str, at: datetime, source: str = "pinned") -> WaVersionRefusedEvent:
    payload = WaVersionRefusedPayload(
        version=OLD,
        source=source,  # type: ignore[arg-type]
        reason_code=405,
        reason=refusal_reason(OLD, source),
    )
    return WaVersionRefusedEvent(session=session, timestamp=at, payload=payload)


async def publish(redis: aioredis.Redis, *events: Event) -> None:
    for event in events:
        await redis.xadd(EVENTS_STREAM, {"data": event.model_dump_json()})


async def add_session(
    sessions: Sessions, name: str, upstream: Upstream = "whatsapp", state: str = "connecting"
) -> str:
    async with sessions.begin() as db:
        row = Session(name=name, upstream=upstream, state=state, active=True)  # type: ignore[arg-type]
        row.state_changed_at = T0
        db.add(row)
    return row.id


async def row_of(sessions: Sessions, name: str) -> Session:
    async with sessions() as db:
        found = await db.scalars(sa.select(Session).where(Session.name == name))  # type: ignore[arg-type]
        return found.one()


async def until(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def alert_settings(
    make_settings: MakeSettings, database_url: str, url: str | None, **webhooks: Any
) -> Settings:
    settings = make_settings(
        database={"url": database_url},
        webhooks={"alert_webhook_url": url, "allow_private": True, **webhooks},
    )
    create_master_key(settings.master_key_path)
    return settings


async def test_the_api_alerts_once_per_engine_and_shows_the_cause_in_the_session(
    make_settings: MakeSettings,
    database_url: str,
    db_sessionmaker: Sessions,
    redis: aioredis.Redis,
    post_receiver: PostReceiver,
) -> None:
    # The default interval (5 min): fifty sessions refused alike are one alert, not fifty.
    settings = alert_settings(
        make_settings, database_url, post_receiver.url("/alerts"), poll_interval_s=0.05
    )
    admin = (await api_keys.create_api_key(db_sessionmaker, name="a", role="admin")).plaintext
    first = await add_session(db_sessionmaker, "sales-1")
    await add_session(db_sessionmaker, "sales-2")
    # The engine holds both, as its heartbeat (written before the close) says.
    beat = EngineHeartbeat(
        pid=4242,
        upstream="whatsapp",
        started_at=T0,
        uptime_s=1,
        rss_bytes=1,
        heap_used_bytes=1,
        heap_total_bytes=1,
        sessions=2,
        loop_lag_ms=0,
        node_version="v24.0.0",
        at=T0,
        session_states={"sales-1": "reconnecting", "sales-2": "reconnecting"},
    )
    await redis.set(engine_heartbeat_key("whatsapp"), beat.model_dump_json(), ex=60)
    app = create_app(settings)
    async with running_api(app) as api:
        hook = await api.post(
            "/v1/webhooks",
            headers=auth(admin),
            json={"url": post_receiver.url("/hook"), "eventTypes": ["session.version_refused"]},
        )
        assert hook.status_code == 201, hook.text
        t1 = T0 + timedelta(seconds=1)
        await publish(
            redis, closed("sales-1", t1), refused("sales-1", t1 + timedelta(milliseconds=2))
        )
        await publish(
            redis, closed("sales-2", t1), refused("sales-2", t1 + timedelta(milliseconds=3))
        )

        # GET /v1/sessions/{id} names the cause (the state is still the engine's).
        body = await until(lambda: _reason_of(api, first, admin))
        assert body["state"] == "reconnecting"
        assert body["stateReason"] == refusal_reason()

        [got] = await until(lambda: post_receiver.snapshot("/alerts"))
        assert got["type"] == "alert.session.version_refused"
        assert got["subject"] == "wa-version:whatsapp"
        assert OLD in got["message"]
        assert "too old" in got["message"]
        # Pinned: the fetch fails; the alert says to check the URL, and to upgrade.
        assert "wa_version_url" in got["message"]
        assert "upgrade wapp" in got["message"]
        assert got["details"] == {
            "session": "sales-1",
            "upstream": "whatsapp",
            "version": OLD,
            "source": "pinned",
            "reasonCode": 405,
            "reason": refusal_reason(),
            "action": got["details"]["action"],
        }
        # The tenant-facing event also reaches the endpoint that filters on its type.
        posts = await until(
            lambda: len(post_receiver.snapshot("/hook")) == 2 and post_receiver.snapshot("/hook")
        )
        assert {p["type"] for p in posts} == {"session.version_refused"}
        assert {p["data"]["version"] for p in posts} == {OLD}
        await _reason_of(api, await _id_of(db_sessionmaker, "sales-2"), admin)
        alerter = app.state.webhooks.alerter
        await alerter.flush()
    # sales-2's refusal was handled too (its reason shows it) but sent no second alert.
    assert len(post_receiver.snapshot("/alerts")) == 1
    async with db_sessionmaker() as db:
        rows = (await db.scalars(sa.select(WebhookDelivery))).all()
    assert sorted(r.session or "" for r in rows) == ["sales-1", "sales-2"]


async def _id_of(sessions: Sessions, name: str) -> str:
    return (await row_of(sessions, name)).id


async def _reason_of(api: Any, session_id: str, key: str) -> dict[str, Any] | None:
    answer = await api.get(f"/v1/sessions/{session_id}", headers=auth(key))
    body: dict[str, Any] = answer.json()
    return body if (body.get("stateReason") or "").startswith("WhatsApp refused") else None


@pytest.fixture
def make_consumer(
    make_settings: MakeSettings,
    database_url: str,
    db_engine: AsyncEngine,
    db_sessionmaker: Sessions,
    redis: aioredis.Redis,
) -> Callable[..., tuple[EventConsumer, Alerter]]:
    def make(url: str | None, **webhooks: Any) -> tuple[EventConsumer, Alerter]:
        settings = alert_settings(make_settings, database_url, url, **webhooks)
        alerter = Alerter(settings.webhooks, create_sessionmaker(db_engine, read_only=True), redis)
        consumer = EventConsumer(
            redis=redis, writer=db_sessionmaker, block_ms=100, claim_idle_ms=0, alerter=alerter
        )
        return consumer, alerter

    return make


async def drain(consumer: EventConsumer, alerter: Alerter) -> None:
    await consumer.ensure_group()
    while await consumer.read_once(block_ms=50):
        pass
    await alerter.flush()


async def test_a_failed_session_keeps_its_attempts_after_the_cause(
    make_consumer: Callable[..., tuple[EventConsumer, Alerter]],
    db_sessionmaker: Sessions,
    redis: aioredis.Redis,
    post_receiver: PostReceiver,
) -> None:
    consumer, alerter = make_consumer(post_receiver.url("/alerts"), alert_min_interval_s=0)
    await add_session(db_sessionmaker, "sales-1")
    gave_up = "3 connection attempts never reached connected; last: " + CLOSE
    t1 = T0 + timedelta(seconds=5)
    event = refused("sales-1", t1 + timedelta(milliseconds=1), source="fetched")
    # Delivered twice (a redelivery after a crash before the ack): handled once.
    await publish(redis, closed("sales-1", t1, "failed", gave_up), event, event)
    await drain(consumer, alerter)
    row = await row_of(db_sessionmaker, "sales-1")
    assert row.state == "failed"
    assert row.state_reason == f"{refusal_reason(source='fetched')}; {gave_up}"
    assert row.state_reason_code == 405
    [got] = post_receiver.snapshot("/alerts")
    # Fetched and still refused: the engine looks again; upgrading is what is left.
    assert "fetches the current version again" in got["details"]["action"]
    assert "wa_version_url" not in got["message"]
    assert "upgrade wapp" in got["message"]


async def test_a_late_refusal_leaves_a_newer_state_alone_but_still_alerts(
    make_consumer: Callable[..., tuple[EventConsumer, Alerter]],
    db_sessionmaker: Sessions,
    redis: aioredis.Redis,
    post_receiver: PostReceiver,
) -> None:
    consumer, alerter = make_consumer(post_receiver.url("/alerts"), alert_min_interval_s=0)
    await add_session(db_sessionmaker, "sales-1")
    await add_session(db_sessionmaker, "lab-1", upstream="sandbox")
    t1 = T0 + timedelta(seconds=5)
    connected = SessionStateEvent(
        session="sales-1", timestamp=t1, payload=SessionStatePayload(state="connected")
    )
    await publish(
        redis,
        connected,
        refused("sales-1", t1 - timedelta(seconds=1)),  # older than `connected`
        closed("lab-1", t1),
        refused("lab-1", t1),
        refused("gone-1", t1),  # a session deleted meanwhile: no row, still a refusal
    )
    await drain(consumer, alerter)
    row = await row_of(db_sessionmaker, "sales-1")
    assert (row.state, row.state_reason) == ("connected", None)
    assert (await row_of(db_sessionmaker, "lab-1")).state_reason == refusal_reason()
    alerts = post_receiver.snapshot("/alerts")
    # Keyed per engine: whatsapp, sandbox and the unknown one are three subjects.
    assert sorted(a["subject"] for a in alerts) == [
        "wa-version:sandbox",
        "wa-version:unknown",
        "wa-version:whatsapp",
    ]
    gone = next(a for a in alerts if a["subject"] == "wa-version:unknown")
    assert gone["details"]["session"] == "gone-1"
    assert gone["details"]["upstream"] is None


async def test_without_an_alert_channel_nothing_is_sent_or_counted(
    make_consumer: Callable[..., tuple[EventConsumer, Alerter]],
    db_sessionmaker: Sessions,
    redis: aioredis.Redis,
) -> None:
    consumer, alerter = make_consumer(None)
    await add_session(db_sessionmaker, "sales-1")
    t1 = T0 + timedelta(seconds=5)
    await publish(redis, closed("sales-1", t1), refused("sales-1", t1))
    await drain(consumer, alerter)
    # The reason still names the cause; no rate-limit key was spent on an unsent alert.
    assert (await row_of(db_sessionmaker, "sales-1")).state_reason == refusal_reason()
    assert alerter.sent == []
    assert await redis.keys("wapp:alerts:*") == []


def test_on_the_real_stack_a_refused_login_alerts_the_admin(
    stack_dir: StackDir,
    post_receiver: PostReceiver,
) -> None:
    """The sandbox engine against the simulator refusing its version (min-version fault)."""
    config = stack_dir.config.read_text(encoding="utf-8")
    # No network needed: the fetch fails at once and the engine uses its pinned version.
    config = config.replace(
        "[engine]\n",
        '[engine]\nwa_version_url = "http://127.0.0.1:9/sw.js"\nwa_version_timeout_s = 1\n',
    )
    config += (
        f'[webhooks]\nallow_private = true\nalert_webhook_url = "{post_receiver.url("/alerts")}"\n'
    )
    stack_dir.config.write_text(config, encoding="utf-8")
    start_stack(stack_dir)
    control = load_settings(stack_dir.config).sandbox.control_port
    fault = httpx.post(
        f"http://127.0.0.1:{control}/faults/min-version", json={"version": "2.3000.9999999999"}
    )
    assert fault.status_code == 200, fault.text
    boot = stack_dir.wapp("keys", "bootstrap-admin")
    assert boot.returncode == 0, boot.stderr
    key = boot.stdout.strip().splitlines()[-1]
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack_dir.api_port}", headers=auth(key), timeout=30
    ) as api:
        created = api.post("/v1/sessions", json={"name": "v-old", "upstream": "sandbox"})
        assert created.status_code == 201, created.text
        alerts = wait_for("the alert", lambda: post_receiver.snapshot("/alerts"))
        shown = wait_for(
            "the cause in the session's state reason",
            lambda: (
                (body := api.get("/v1/sessions/v-old").json())["stateReason"]
                and "outdated" in body["stateReason"]
                and body
            ),
        )
    [got] = [a for a in alerts if a["type"] == "alert.session.version_refused"]
    assert got["subject"] == "wa-version:sandbox"
    assert got["details"]["session"] == "v-old"
    assert got["details"]["source"] == "pinned"
    assert got["details"]["reasonCode"] == 405
    assert got["details"]["version"] in got["message"]
    assert shown["state"] in ("reconnecting", "failed")
    assert got["details"]["version"] in shown["stateReason"]
