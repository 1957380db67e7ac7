# ruff: noqa: F811  (fixtures imported from test_webhooks_support are requested by name)
"""The `engine.recycled` admin alert: engine restarts seen in the heartbeat, to a real receiver.

The heartbeats are written to the test's real Redis as the engine writes them; the
monitors are the api workers' own, polled by hand or run as their loop.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from appliance.contracts import EngineHeartbeat, Upstream
from appliance.db.engine import create_sessionmaker
from appliance.redis_keys import engine_heartbeat_key
from appliance.settings import Settings
from appliance.webhooks.alerts import Alerter
from appliance.webhooks.engine_restarts import EngineRestartMonitor
from tests.fixtures.settings import MakeSettings
from tests.fixtures.waiting import wait_for_async
from tests.fixtures.webhooks import (  # noqa: F401
    BOOT,
    Receiver,
    beat,
    receiver,
    running_api_for,
    settings_with_key,
)


async def put(redis: aioredis.Redis, value: EngineHeartbeat | str) -> None:
    raw = value if isinstance(value, str) else value.model_dump_json()
    upstream = "whatsapp" if isinstance(value, str) else value.upstream
    await redis.set(engine_heartbeat_key(upstream), raw, ex=60)


def alert_settings(make_settings: MakeSettings, database_url: str, url: str, **more: Any) -> Any:
    return make_settings(
        database={"url": database_url},
        webhooks={"alert_webhook_url": url, "alert_min_interval_s": 0, **more},
    )


def monitor(
    settings: Settings,
    db_engine: AsyncEngine,
    redis: aioredis.Redis,
    upstreams: tuple[Upstream, ...] = ("whatsapp",),
    poll_s: float = 0.02,
) -> EngineRestartMonitor:
    alerter = Alerter(settings.webhooks, create_sessionmaker(db_engine, read_only=True), redis)
    return EngineRestartMonitor(alerter, redis, upstreams, poll_s=poll_s)


@pytest.fixture
def watch(
    make_settings: MakeSettings,
    database_url: str,
    db_engine: AsyncEngine,
    redis: aioredis.Redis,
    receiver: Receiver,
) -> EngineRestartMonitor:
    """A watch on the whatsapp engine whose alerts go to `receiver`, unthrottled."""
    return monitor(alert_settings(make_settings, database_url, receiver.url), db_engine, redis)


async def test_the_first_heartbeat_seen_and_a_missing_one_alert_nothing(
    watch: EngineRestartMonitor, redis: aioredis.Redis, receiver: Receiver
) -> None:
    assert await watch.poll() == 0  # no engine yet
    await put(redis, beat(100))
    assert await watch.poll() == 0  # the stack (or this api) just started: remembered only
    assert await watch.poll() == 0
    await redis.delete(engine_heartbeat_key("whatsapp"))
    assert await watch.poll() == 0  # gone: /readyz says so, no alert
    await put(redis, beat(100))
    assert await watch.poll() == 0  # back from the same boot (a Redis blip)
    assert receiver.received == []


async def test_a_new_boot_sends_one_engine_recycled_alert(
    watch: EngineRestartMonitor, redis: aioredis.Redis, receiver: Receiver
) -> None:
    await put(redis, beat(100, rss_mb=300))
    assert await watch.poll() == 0
    await put(redis, beat(100, rss_mb=812.5))  # the old process's last heartbeat
    assert await watch.poll() == 0
    # The engine dies; its key expires; a while later the new process writes its own.
    await redis.delete(engine_heartbeat_key("whatsapp"))
    assert await watch.poll() == 0
    await put(redis, beat(456, 1, rss_mb=90))
    assert await watch.poll() == 1
    assert await watch.poll() == 0  # the same new boot again: nothing more
    [got] = receiver.received
    assert got.json == {
        "type": "alert.engine.recycled",
        "subject": "engine:whatsapp",
        "message": "engine (whatsapp) restarted: pid 100 -> 456",
        "timestamp": (BOOT + timedelta(minutes=1)).isoformat(),
        "details": {
            "upstream": "whatsapp",
            "oldPid": 100,
            "newPid": 456,
            "oldStartedAt": BOOT.isoformat(),
            "newStartedAt": (BOOT + timedelta(minutes=1)).isoformat(),
            "oldRssMb": 812.5,
            "oldUptimeS": 42.0,
        },
    }
    # The same pid with another start time (a container's pid 1) is a restart too.
    await put(redis, beat(456, 2))
    assert await watch.poll() == 1
    assert (
        receiver.received[1].json["details"]["oldStartedAt"] == got.json["details"]["newStartedAt"]
    )


async def test_two_api_workers_send_one_alert_per_restart(
    make_settings: MakeSettings,
    database_url: str,
    db_engine: AsyncEngine,
    redis: aioredis.Redis,
    redis_url: str,
    receiver: Receiver,
) -> None:
    # No rate limit here: the boot claim alone must keep the workers from alerting twice.
    settings = alert_settings(make_settings, database_url, receiver.url)
    other_redis = aioredis.Redis.from_url(redis_url)  # each worker has its own connection
    try:
        workers = [monitor(settings, db_engine, redis), monitor(settings, db_engine, other_redis)]

        async def poll_both() -> int:
            return sum(await asyncio.gather(*(w.poll() for w in workers)))

        await put(redis, beat(100))
        assert await poll_both() == 0
        for restart in (1, 2):
            await put(redis, beat(100 + restart, restart))
            assert await poll_both() == 1
            assert await poll_both() == 0
    finally:
        await other_redis.aclose()
    assert [r.json["details"]["newPid"] for r in receiver.received] == [101, 102]


async def test_an_engine_restarting_in_a_loop_is_rate_limited_per_upstream(
    make_settings: MakeSettings,
    database_url: str,
    db_engine: AsyncEngine,
    redis: aioredis.Redis,
    receiver: Receiver,
) -> None:
    settings = alert_settings(make_settings, database_url, receiver.url, alert_min_interval_s=1.0)
    watch = monitor(settings, db_engine, redis, ("whatsapp", "sandbox"))
    await put(redis, beat(100))
    await put(redis, beat(200, upstream="sandbox"))
    assert await watch.poll() == 0
    sent = 0
    for restart in range(1, 6):  # five crashes in a row
        await put(redis, beat(100 + restart, restart))
        sent += await watch.poll()
    assert sent == 1
    # The other engine has its own limit.
    await put(redis, beat(201, 1, upstream="sandbox"))
    assert await watch.poll() == 1
    await asyncio.sleep(1.1)  # the interval is over: the next restart alerts again
    await put(redis, beat(106, 6))
    assert await watch.poll() == 1
    assert [r.json["subject"] for r in receiver.received] == [
        "engine:whatsapp",
        "engine:sandbox",
        "engine:whatsapp",
    ]
    assert [r.json["details"]["newPid"] for r in receiver.received] == [101, 201, 106]


async def test_unreadable_heartbeats_and_a_dead_redis_are_logged_and_the_loop_goes_on(
    make_settings: MakeSettings,
    database_url: str,
    db_engine: AsyncEngine,
    redis: aioredis.Redis,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = alert_settings(make_settings, database_url, receiver.url)
    dead = aioredis.Redis.from_url("unix:///nonexistent/redis.sock")
    try:
        with caplog.at_level(logging.INFO, logger="appliance.webhooks.engine_restarts"):
            assert await monitor(settings, db_engine, dead).poll() == 0
        assert "ConnectionError" in caplog.text
    finally:
        await dead.aclose()

    watch = monitor(settings, db_engine, redis)
    await put(redis, beat(100))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="appliance.webhooks.engine_restarts"):
        watch.start()
        try:
            await wait_for_async(
                '"whatsapp" in watch._seen', lambda: "whatsapp" in watch._seen, timeout=5
            )
            await put(redis, "{not json")
            await wait_for_async(
                '"ValidationError" in caplog.text',
                lambda: "ValidationError" in caplog.text,
                timeout=5,
            )
            await put(redis, beat(101, 1))
            await wait_for_async(
                "len(receiver.received) == 1", lambda: len(receiver.received) == 1, timeout=5
            )
            assert watch._task is not None
            assert not watch._task.done()
        finally:
            await watch.stop()
    assert "heartbeat readable again" in caplog.text
    assert receiver.received[0].json["details"]["oldPid"] == 100


async def test_the_api_watches_every_engine_the_stack_runs(
    make_settings: MakeSettings,
    database_url: str,
    redis: aioredis.Redis,
    receiver: Receiver,
) -> None:
    settings = settings_with_key(
        make_settings,
        database_url,
        webhooks={"alert_webhook_url": receiver.url},
        engine={"heartbeat_interval_s": 0.05, "heartbeat_ttl_s": 1},
        sandbox={"enabled": True},
    )
    await put(redis, beat(200, upstream="sandbox"))
    async with running_api_for(settings) as client:
        runtime: Any = client._transport.app.state.webhooks  # type: ignore[attr-defined]
        watch: EngineRestartMonitor = runtime.engine_restarts
        assert watch.upstreams == ("whatsapp", "sandbox")
        assert watch.poll_s == 0.05  # as often as the engines write their heartbeat
        await wait_for_async(
            '"sandbox" in watch._seen', lambda: "sandbox" in watch._seen, timeout=5
        )
        await put(redis, beat(201, 1, upstream="sandbox"))
        await wait_for_async(
            "len(receiver.received) == 1", lambda: len(receiver.received) == 1, timeout=5
        )
    assert receiver.received[0].json["subject"] == "engine:sandbox"
    assert runtime.engine_restarts._task is None  # stopped with the api
