"""GET /metrics on an in-process api (real Redis and database): access, request metrics
with route templates (the fast send path too), messages, queue depth, sessions, and the
Redis-kept totals (engine restarts, reconnects), parsed with prometheus_client's parser."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance import redis_keys
from appliance.api.app import create_app
from appliance.contracts import EngineHeartbeat, SessionStateEvent, SessionStatePayload, Upstream
from appliance.events.consumer import EventConsumer
from appliance.metrics import counters
from appliance.metrics.http import RequestMetrics
from appliance.redis_keys import EVENTS_STREAM
from tests.fixtures.api import auth
from tests.fixtures.api_helpers import connected_session, create_session, inbound_message
from tests.fixtures.settings import MakeSettings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample by (name, labels), through prometheus_client's own text parser."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def client_from(app: object, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://wapp.test")


@pytest.mark.parametrize(
    ("mode", "address", "key", "status"),
    [
        ("loopback", "127.0.0.1", None, 200),
        ("loopback", "::1", None, 200),
        ("loopback", "203.0.113.7", None, 401),
        ("loopback", "203.0.113.7", "tenant", 403),
        ("loopback", "203.0.113.7", "admin", 200),
        ("admin", "127.0.0.1", None, 401),
        ("admin", "127.0.0.1", "tenant", 403),
        ("admin", "203.0.113.7", "admin", 200),
        ("open", "203.0.113.7", None, 200),
    ],
)
async def test_metrics_access_follows_the_setting(
    make_settings: MakeSettings,
    database_url: str,
    redis: aioredis.Redis,
    admin_key: str,
    tenant_key: str,
    mode: str,
    address: str,
    key: str | None,
    status: int,
) -> None:
    app = create_app(make_settings(database={"url": database_url}, api={"metrics_access": mode}))
    headers = auth({"admin": admin_key, "tenant": tenant_key}[key]) if key else {}
    async with app.router.lifespan_context(app), client_from(app, address) as client:
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == status, response.text
    if status != 200:
        body = response.json()
        assert body["success"] is False
        assert body["error"]["code"] == ("UNAUTHORIZED" if status == 401 else "FORBIDDEN")


async def test_requests_sends_and_queues_are_counted_with_route_templates(
    api_client: httpx.AsyncClient,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    row = await connected_session(api_client, admin_key, db_sessionmaker, "sales-1")
    await create_session(api_client, admin_key, "idle-1")
    for i in range(3):  # the JSON send: the fast path, ahead of the router
        response = await api_client.post(
            "/v1/sessions/sales-1/messages",
            json={"type": "text", "to": "4915112345678", "text": f"hi {i}"},
            headers=auth(admin_key),
        )
        assert response.status_code == 202, response.text
    bad = await api_client.post(
        "/v1/sessions/sales-1/messages", json={"type": "text"}, headers=auth(admin_key)
    )
    assert bad.status_code == 422
    assert (await api_client.get("/v1/sessions/idle-1", headers=auth(admin_key))).status_code == 200
    assert (await api_client.get("/no/such/path/42")).status_code == 404
    await inbound_message(db_sessionmaker, row["id"])

    samples = await scrape(api_client)

    route = "/v1/sessions/{session}/messages"
    assert value(samples, "wapp_http_requests_total", method="POST", route=route, status="202") == 3
    assert value(samples, "wapp_http_requests_total", method="POST", route=route, status="422") == 1
    assert (
        value(
            samples,
            "wapp_http_requests_total",
            method="GET",
            route="/v1/sessions/{session}",
            status="200",
        )
        == 1
    )
    assert (
        value(samples, "wapp_http_requests_total", method="GET", route="unmatched", status="404")
        == 1
    )
    assert not any("/no/such" in str(labels) or "sales-1/" in str(labels) for _, labels in samples)
    count = value(samples, "wapp_http_request_duration_seconds_count", method="POST", route=route)
    inf = value(
        samples, "wapp_http_request_duration_seconds_bucket", method="POST", route=route, le="+Inf"
    )
    assert count == inf == 4
    assert (
        value(samples, "wapp_http_request_duration_seconds_sum", method="POST", route=route) or 0
    ) > 0

    messages = "wapp_messages_total"
    assert value(samples, messages, session="sales-1", direction="out", status="queued") == 3
    assert value(samples, messages, session="sales-1", direction="in", status="received") == 1
    # No engine reads the stream here: all three commands wait in Redis.
    assert value(samples, "wapp_send_queue_depth", session="sales-1") == 3
    assert value(samples, "wapp_send_queue_depth", session="idle-1") == 0
    # No heartbeat: the api shows `connected` as reconnecting, and so do the metrics.
    assert value(samples, "wapp_sessions", state="reconnecting", upstream="whatsapp") == 1
    assert value(samples, "wapp_sessions", state="created", upstream="whatsapp") == 1
    assert value(samples, "wapp_sessions", state="connected", upstream="whatsapp") == 0
    assert value(samples, "wapp_session_state", session="idle-1", state="created") == 1
    assert value(samples, "wapp_session_state", session="idle-1", state="connected") == 0
    assert value(samples, "wapp_engine_up", upstream="whatsapp") == 0
    assert value(samples, "wapp_engine_rss_bytes", upstream="whatsapp") is None

    # The scrape itself is counted, by the next one.
    again = await scrape(api_client)
    assert (
        value(again, "wapp_http_requests_total", method="GET", route="/metrics", status="200") == 1
    )


def beat(upstream: Upstream, pid: int, started: datetime) -> EngineHeartbeat:
    return EngineHeartbeat(
        pid=pid,
        upstream=upstream,
        started_at=started,
        uptime_s=1,
        rss_bytes=300 * 1024 * 1024,
        heap_used_bytes=120 * 1024 * 1024,
        heap_total_bytes=200 * 1024 * 1024,
        sessions=0,
        loop_lag_ms=250,
        node_version="v24",
    )


async def put(redis: aioredis.Redis, heartbeat: EngineHeartbeat) -> None:
    key = redis_keys.engine_heartbeat_key(heartbeat.upstream)
    await redis.set(key, heartbeat.model_dump_json(), ex=60)


async def test_engine_figures_and_restarts_come_from_the_heartbeat(
    api_client: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    await put(redis, beat("whatsapp", 100, t0))
    samples = await scrape(api_client)
    # The first boot ever seen is no restart.
    assert value(samples, "wapp_recycles_total", upstream="whatsapp") == 0
    assert value(samples, "wapp_engine_up", upstream="whatsapp") == 1
    assert value(samples, "wapp_engine_rss_bytes", upstream="whatsapp") == 300 * 1024 * 1024
    assert value(samples, "wapp_engine_heap_used_bytes", upstream="whatsapp") == 120 * 1024 * 1024
    assert value(samples, "wapp_engine_loop_lag_seconds", upstream="whatsapp") == 0.25
    assert value(samples, "wapp_engine_memory_budget_bytes", upstream="whatsapp") == 1536 * 2**20

    await put(redis, beat("whatsapp", 200, t0 + timedelta(minutes=5)))
    # Two workers (two watches) seeing the same new boot count it once.
    first = counters.BootWatch(redis, ["whatsapp"], interval_s=1)
    second = counters.BootWatch(redis, ["whatsapp"], interval_s=1)
    assert await first.poll() + await second.poll() == 1
    # A worker that read the old boot late counts nothing, nor does it roll the boot back.
    await put(redis, beat("whatsapp", 100, t0))
    assert await first.poll() == 0
    await put(redis, beat("whatsapp", 200, t0 + timedelta(minutes=5)))
    samples = await scrape(api_client)
    assert value(samples, "wapp_recycles_total", upstream="whatsapp") == 1


async def test_reconnects_are_counted_once_per_event(
    api_client: httpx.AsyncClient,
    admin_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await connected_session(api_client, admin_key, db_sessionmaker, "sales-1")
    consumer = EventConsumer(redis=redis, writer=db_sessionmaker, block_ms=100, claim_idle_ms=0)
    await consumer.ensure_group()
    now = datetime.now(UTC)
    events = [
        SessionStateEvent(
            session="sales-1",
            timestamp=now + timedelta(seconds=i),
            payload=SessionStatePayload(
                state=state, attempt=i if state == "reconnecting" else None
            ),
        )
        for i, state in enumerate(["reconnecting", "connecting", "reconnecting", "connected"])
    ]
    for event in events:
        await redis.xadd(EVENTS_STREAM, {"data": event.model_dump_json()})
    while await consumer.read_once(block_ms=100):
        pass
    # A redelivered entry runs the after-commit step again: still counted once.
    await consumer.handle([("0-1", {b"data": events[0].model_dump_json().encode()})])
    samples = await scrape(api_client)
    assert value(samples, "wapp_reconnects_total", session="sales-1") == 2


async def test_a_failed_flush_keeps_the_counts(redis: aioredis.Redis) -> None:
    requests = RequestMetrics()
    scope = {"method": "GET", "wapp.route": "/healthz"}
    requests.observe(scope, 200, 0.003)
    broken = aioredis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    try:
        assert await requests.flush(broken) == 0
    finally:
        await broken.aclose()
    requests.observe(scope, 200, 0.2)
    assert await requests.flush(redis) == 2
    fields = await redis.hgetall("wapp:metrics:http:requests")
    assert fields == {b"GET|/healthz|200": b"2"}
    assert await requests.flush(redis) == 0  # nothing counted twice


async def test_two_workers_scrapes_show_the_sum_of_both(
    make_settings: MakeSettings, database_url: str, redis: aioredis.Redis
) -> None:
    """Two apps on one database and Redis, as two uvicorn workers are: whichever answers
    the scrape shows what both served (each flushes into Redis; the scraper its own first)."""
    settings = make_settings(database={"url": database_url})
    one, two = create_app(settings), create_app(settings)
    async with (
        one.router.lifespan_context(one),
        two.router.lifespan_context(two),
        client_from(one, "127.0.0.1") as first,
        client_from(two, "127.0.0.1") as second,
    ):
        for _ in range(3):
            assert (await first.get("/healthz")).status_code == 200
        for _ in range(2):
            assert (await second.get("/healthz")).status_code == 200
        # The first worker's periodic flush (every 2 s) brings its counts in.
        scrapes = 0
        for _ in range(50):
            samples = await scrape(second)
            scrapes += 1
            got = value(
                samples, "wapp_http_requests_total", method="GET", route="/healthz", status="200"
            )
            if got == 5:
                break
            await asyncio.sleep(0.1)
        assert got == 5
    # Stopping flushes what was left, the last scrape's own count included.
    stored = await redis.hget("wapp:metrics:http:requests", "GET|/metrics|200")
    assert int(stored or 0) == scrapes
