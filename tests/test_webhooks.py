# ruff: noqa: F811  (fixtures imported from test_webhooks_support are requested by name)
"""Webhooks end to end: the api's routes, the outbox, the dispatcher and real receivers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook as StandardWebhook

from appliance.settings import Settings
from tests.fixtures.api import auth
from tests.fixtures.waiting import wait_for_async
from tests.fixtures.webhooks import (  # noqa: F401  (fixtures)
    Receiver,
    add_session,
    feed,
    key_id,
    receiver,
    running_api_for,
    settings_with_key,
    state_event,
    status_event,
    webhook_settings,
    wh_client,
)


async def _create(client: httpx.AsyncClient, key: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/webhooks", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_deliveries_are_signed_so_the_reference_library_verifies_them(
    wh_client: httpx.AsyncClient,
    receiver: Receiver,
    tenant_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    hook = await _create(wh_client, tenant_key, url=receiver.url)
    assert hook["secret"].startswith("whsec_")
    listed = await wh_client.get("/v1/webhooks", headers=auth(tenant_key))
    assert hook["secret"] not in listed.text
    sid = await add_session(db_sessionmaker, "s1", key_id(tenant_key))
    assert (
        await feed(
            db_sessionmaker, [state_event("s1")], owner_key_id=key_id(tenant_key), session_id=sid
        )
        == 1
    )

    await wait_for_async("len(receiver.received) == 1", lambda: len(receiver.received) == 1)
    got = receiver.received[0]
    payload = StandardWebhook(hook["secret"]).verify(got.body, got.headers)
    assert payload["type"] == "session.state"
    assert payload["session"] == "s1"
    assert payload["data"]["state"] == "connected"
    assert got.headers["webhook-id"] == payload["id"]
    assert tenant_key not in got.body.decode()
    assert hook["secret"] not in got.body.decode()


async def test_during_a_rotation_both_secrets_sign(
    wh_client: httpx.AsyncClient,
    receiver: Receiver,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    hook = await _create(wh_client, admin_key, url=receiver.url)
    rotated = await wh_client.post(
        f"/v1/webhooks/{hook['id']}/rotate-secret", json={"overlapS": 60}, headers=auth(admin_key)
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["secret"] != hook["secret"]
    assert new["previousSecretExpiresAt"] is not None
    await feed(db_sessionmaker, [state_event("x")], owner_key_id=None, session_id=None)
    await wait_for_async("len(receiver.received) == 1", lambda: len(receiver.received) == 1)
    got = receiver.received[0]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    StandardWebhook(hook["secret"]).verify(got.body, got.headers)
    StandardWebhook(new["secret"]).verify(got.body, got.headers)


async def test_a_receiver_that_fails_three_times_gets_the_event_once_with_one_webhook_id(
    wh_client: httpx.AsyncClient,
    receiver: Receiver,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    receiver.script = [(500, {}), (503, {}), (429, {"Retry-After": "0"}), (200, {})]
    hook = await _create(wh_client, admin_key, url=receiver.url)
    await feed(db_sessionmaker, [state_event("x")], owner_key_id=None, session_id=None)
    await wait_for_async("len(receiver.received) == 1", lambda: len(receiver.received) == 1)
    assert receiver.answered == [500, 503, 429, 200]

    async def delivery() -> dict[str, Any]:
        r = await wh_client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth(admin_key))
        item: dict[str, Any] = r.json()["items"][0]
        return item

    d = await wait_for_async(
        'd["status"] == "delivered"', delivery, ok=lambda d: d["status"] == "delivered"
    )
    assert d["eventId"] == receiver.received[0].headers["webhook-id"]
    assert [a["statusCode"] for a in d["attemptLog"]] == [500, 503, 429, 200]
    assert all(a["latencyMs"] is not None for a in d["attemptLog"])
    assert (d["status"], d["attempts"]) == ("delivered", 4)


async def test_events_of_one_session_arrive_in_order_even_across_retries(
    wh_client: httpx.AsyncClient,
    receiver: Receiver,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    receiver.script = [(500, {}), (500, {})]
    await _create(wh_client, admin_key, url=receiver.url)
    events = [status_event("s", i) for i in range(20)]
    await feed(db_sessionmaker, list(events), owner_key_id=None, session_id=None)
    await wait_for_async("len(receiver.received) == 20", lambda: len(receiver.received) == 20)
    assert [r.json["id"] for r in receiver.received] == [str(e.id) for e in events]


async def test_a_receiver_down_across_an_api_restart_still_gets_every_event(
    webhook_settings: Settings,
    redis: Any,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    down = Receiver().start()
    port = down.port
    down.stop()  # nothing listens on the port now
    events = [status_event("s", i) for i in range(10)]
    async with running_api_for(webhook_settings) as client:
        hook = await _create(client, admin_key, url=f"http://127.0.0.1:{port}/hook")
        await feed(db_sessionmaker, list(events), owner_key_id=None, session_id=None)
        import asyncio

        await asyncio.sleep(0.5)  # several failed tries while the api runs
        listed = (
            await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth(admin_key))
        ).json()["items"]
        assert any(d["attempts"] > 0 and d["lastError"] for d in listed)
    # The api is gone; the receiver comes up on the same port; a new api starts.
    up = Receiver(port=port).start()
    try:
        async with running_api_for(webhook_settings):
            await wait_for_async(
                "len(up.received) == 10", lambda: len(up.received) == 10, timeout=15
            )
        assert [r.json["id"] for r in up.received] == [str(e.id) for e in events]
    finally:
        up.stop()


async def test_a_dead_letter_is_replayed_with_the_same_webhook_id(
    make_settings: Any,
    database_url: str,
    redis: Any,
    receiver: Receiver,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    settings = settings_with_key(
        make_settings,
        database_url,
        webhooks={
            "allow_private": True,
            "retry_initial_s": 0.05,
            "retry_max_s": 0.1,
            "retry_window_s": 0.3,
            "poll_interval_s": 0.05,
        },
    )
    receiver.script = [(503, {})] * 1000
    async with running_api_for(settings) as client:
        hook = await _create(client, admin_key, url=receiver.url)
        event = state_event("x")
        await feed(db_sessionmaker, [event], owner_key_id=None, session_id=None)

        async def status() -> str:
            items = (
                await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth(admin_key))
            ).json()["items"]
            return str(items[0]["status"])

        import asyncio

        for _ in range(200):
            if await status() == "dead":
                break
            await asyncio.sleep(0.05)
        assert await status() == "dead"
        assert receiver.received == []
        receiver.script = []
        since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        replayed = await client.post(
            f"/v1/webhooks/{hook['id']}/replay", params={"since": since}, headers=auth(admin_key)
        )
        assert replayed.json() == {"requeued": 1}
        await wait_for_async("len(receiver.received) == 1", lambda: len(receiver.received) == 1)
        assert receiver.received[0].headers["webhook-id"] == str(event.id)
        # A delivered event is re-sent on request too, still with its id (a pending one
        # is left alone: wait until the first replay is recorded as delivered).
        for _ in range(100):
            if await status() == "delivered":
                break
            await asyncio.sleep(0.05)
        again = await client.post(
            f"/v1/webhooks/{hook['id']}/replay", params={"since": since}, headers=auth(admin_key)
        )
        assert again.json() == {"requeued": 1}
        await wait_for_async("len(receiver.received) == 2", lambda: len(receiver.received) == 2)
        assert receiver.received[1].headers["webhook-id"] == str(event.id)


async def test_410_disables_the_endpoint_and_other_4xx_are_permanent(
    wh_client: httpx.AsyncClient,
    receiver: Receiver,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    receiver.script = [(400, {}), (410, {})]
    hook = await _create(wh_client, admin_key, url=receiver.url)
    await feed(db_sessionmaker, [status_event("a", 1)], owner_key_id=None, session_id=None)
    await feed(db_sessionmaker, [status_event("b", 2)], owner_key_id=None, session_id=None)

    async def get() -> dict[str, Any]:
        r = await wh_client.get(f"/v1/webhooks/{hook['id']}", headers=auth(admin_key))
        body: dict[str, Any] = r.json()
        return body

    import asyncio

    for _ in range(100):
        if not (await get())["enabled"]:
            break
        await asyncio.sleep(0.05)
    disabled = await get()
    assert disabled["enabled"] is False
    assert "410" in disabled["disabledReason"]
    items = (
        await wh_client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth(admin_key))
    ).json()["items"]
    assert sorted((d["status"], d["lastStatusCode"], d["attempts"]) for d in items) == [
        ("failed", 400, 1),
        ("failed", 410, 1),
    ]
    # A disabled endpoint gets no new deliveries.
    assert await feed(db_sessionmaker, [state_event("x")], owner_key_id=None, session_id=None) == 0


async def test_private_targets_are_refused_unless_allowed(
    api_client_for: Any,
    make_settings: Any,
    database_url: str,
    redis: Any,
    receiver: Receiver,
    admin_key: str,
) -> None:
    settings = settings_with_key(make_settings, database_url)
    async with api_client_for(settings) as client:
        for url in (
            receiver.url,
            "http://localhost:9/x",
            "http://10.1.2.3/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "http://192.168.1.1/x",
        ):
            refused = await client.post("/v1/webhooks", json={"url": url}, headers=auth(admin_key))
            assert refused.status_code == 422, (url, refused.text)
            assert refused.json()["error"]["code"] == "WEBHOOK_URL_REFUSED"
        test = await client.post(
            "/v1/webhooks", json={"url": "ftp://example.com/x"}, headers=auth(admin_key)
        )
        assert test.status_code == 422


async def test_a_private_target_is_refused_again_at_send_time(
    make_settings: Any,
    database_url: str,
    redis: Any,
    receiver: Receiver,
    db_sessionmaker: async_sessionmaker[AsyncSession],
    admin_key: str,
) -> None:
    """An endpoint stored while private targets were allowed is refused after DNS later."""
    allowed = settings_with_key(
        make_settings, database_url, webhooks={"allow_private": True, "poll_interval_s": 0.05}
    )
    async with running_api_for(allowed) as client:
        hook = await _create(client, admin_key, url=receiver.url)
    strict = make_settings(database={"url": database_url}, webhooks={"poll_interval_s": 0.05})
    async with running_api_for(strict) as client:
        await feed(db_sessionmaker, [state_event("x")], owner_key_id=None, session_id=None)

        async def status() -> dict[str, Any]:
            items = (
                await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth(admin_key))
            ).json()["items"]
            d: dict[str, Any] = items[0]
            return d

        import asyncio

        for _ in range(100):
            if (await status())["status"] != "pending":
                break
            await asyncio.sleep(0.05)
        d = await status()
        assert d["status"] == "failed"
        assert "private" in d["lastError"]
    assert receiver.answered == []


async def test_tenants_see_only_their_own_webhooks(
    wh_client: httpx.AsyncClient,
    receiver: Receiver,
    tenant_key: str,
    other_tenant_key: str,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    mine = await _create(wh_client, tenant_key, url=receiver.url)
    theirs = await _create(wh_client, other_tenant_key, url=receiver.url)
    listed = (await wh_client.get("/v1/webhooks", headers=auth(tenant_key))).json()["items"]
    assert [w["id"] for w in listed] == [mine["id"]]
    hid = theirs["id"]
    for method, path, body in (
        ("GET", f"/v1/webhooks/{hid}", None),
        ("PATCH", f"/v1/webhooks/{hid}", {"enabled": False}),
        ("DELETE", f"/v1/webhooks/{hid}", None),
        ("POST", f"/v1/webhooks/{hid}/rotate-secret", None),
        ("POST", f"/v1/webhooks/{hid}/replay?since=2026-01-01T00:00:00Z", None),
        ("GET", f"/v1/webhooks/{hid}/deliveries", None),
        ("POST", f"/v1/webhooks/{hid}/test", None),
    ):
        r = await wh_client.request(method, path, json=body, headers=auth(tenant_key))
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "NOT_FOUND"
    admin_list = (await wh_client.get("/v1/webhooks", headers=auth(admin_key))).json()["items"]
    assert {mine["id"], theirs["id"]} <= {w["id"] for w in admin_list}
    # Another tenant's session cannot be targeted either.
    await add_session(db_sessionmaker, "theirs", key_id(other_tenant_key))
    r = await wh_client.post(
        "/v1/webhooks", json={"url": receiver.url, "session": "theirs"}, headers=auth(tenant_key)
    )
    assert r.status_code == 404


async def test_events_go_only_to_the_endpoints_they_match(
    wh_client: httpx.AsyncClient,
    tenant_key: str,
    other_tenant_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    a, b, c, d = (Receiver().start() for _ in range(4))
    try:
        sid = await add_session(db_sessionmaker, "s1", key_id(tenant_key))
        await add_session(db_sessionmaker, "s2", key_id(tenant_key))
        await _create(wh_client, tenant_key, url=a.url)  # tenant-wide
        await _create(wh_client, tenant_key, url=b.url, session="s2")  # another session
        await _create(wh_client, tenant_key, url=c.url, eventTypes=["message.status"])
        await _create(wh_client, other_tenant_key, url=d.url)  # another tenant
        n = await feed(
            db_sessionmaker, [state_event("s1")], owner_key_id=key_id(tenant_key), session_id=sid
        )
        assert n == 1
        await wait_for_async("len(a.received) == 1", lambda: len(a.received) == 1)
        assert (b.received, c.received, d.received) == ([], [], [])
    finally:
        for r in (a, b, c, d):
            r.stop()


async def test_outbox_rows_get_distinct_uuid7_ids_of_their_enqueue_time(
    wh_client: httpx.AsyncClient,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    import time
    import uuid

    import sqlalchemy as sa

    from appliance.db.models import WebhookDelivery

    for port in (1, 2, 3):  # nothing listens there; only the rows matter here
        await _create(wh_client, admin_key, url=f"http://127.0.0.1:{port}/hook")
    before = time.time_ns() // 1_000_000
    assert (
        await feed(
            db_sessionmaker,
            [state_event("x"), state_event("y")],
            owner_key_id=None,
            session_id=None,
        )
        == 6
    )
    after = time.time_ns() // 1_000_000
    async with db_sessionmaker() as db:
        made = [uuid.UUID(i) for i in (await db.scalars(sa.select(WebhookDelivery.id))).all()]
    assert len(set(made)) == 6
    assert {u.version for u in made} == {7}
    assert {u.variant for u in made} == {uuid.RFC_4122}
    assert all(before <= u.int >> 80 <= after for u in made)


async def test_bad_input_answers_422(wh_client: httpx.AsyncClient, admin_key: str) -> None:
    for body in (
        {},
        {"url": 5},
        {"url": "not a url at all"},
        {"url": "https://example.com/x", "eventTypes": []},
        {"url": "https://example.com/x", "eventTypes": ["nope"]},
        {"url": "http://user:pw@example.com/x"},
    ):
        r = await wh_client.post("/v1/webhooks", json=body, headers=auth(admin_key))
        assert r.status_code == 422, (body, r.text)
        assert r.json()["success"] is False
    r = await wh_client.post("/v1/webhooks/nope/replay", headers=auth(admin_key))
    assert r.status_code == 422  # since is required
    r = await wh_client.post("/v1/webhooks/nope/replay?since=yesterday", headers=auth(admin_key))
    assert r.status_code == 422
    r = await wh_client.get("/v1/webhooks/nope/deliveries?limit=0", headers=auth(admin_key))
    assert r.status_code == 422


async def test_unknown_ids_and_missing_keys(wh_client: httpx.AsyncClient, admin_key: str) -> None:
    assert (await wh_client.get("/v1/webhooks")).status_code == 401
    for method, path in (
        ("GET", "/v1/webhooks/nope"),
        ("PATCH", "/v1/webhooks/nope"),
        ("DELETE", "/v1/webhooks/nope"),
        ("POST", "/v1/webhooks/nope/rotate-secret"),
        ("POST", "/v1/webhooks/nope/test"),
        ("GET", "/v1/webhooks/nope/deliveries"),
        ("POST", "/v1/webhooks/nope/replay?since=2026-01-01T00:00:00Z"),
    ):
        r = await wh_client.request(method, path, json={}, headers=auth(admin_key))
        assert r.status_code == 404, (method, path, r.text)
    r = await wh_client.post(
        "/v1/webhooks",
        json={"url": "https://example.com/x", "session": "ghost"},
        headers=auth(admin_key),
    )
    assert r.status_code == 404


async def test_update_delete_and_test_an_endpoint(
    wh_client: httpx.AsyncClient, receiver: Receiver, admin_key: str
) -> None:
    hook = await _create(wh_client, admin_key, url=receiver.url)
    patched = await wh_client.patch(
        f"/v1/webhooks/{hook['id']}",
        json={"eventTypes": ["message.received"], "enabled": False},
        headers=auth(admin_key),
    )
    assert (patched.json()["eventTypes"], patched.json()["enabled"]) == (
        ["message.received"],
        False,
    )
    cleared = await wh_client.patch(
        f"/v1/webhooks/{hook['id']}",
        json={"allEventTypes": True, "enabled": True},
        headers=auth(admin_key),
    )
    assert (cleared.json()["eventTypes"], cleared.json()["enabled"]) == (None, True)
    tested = await wh_client.post(f"/v1/webhooks/{hook['id']}/test", headers=auth(admin_key))
    assert tested.json()["ok"] is True
    assert tested.json()["statusCode"] == 200
    got = receiver.received[0]
    assert StandardWebhook(hook["secret"]).verify(got.body, got.headers)["type"] == "webhook.test"
    receiver.script = [(500, {})]
    failed = await wh_client.post(f"/v1/webhooks/{hook['id']}/test", headers=auth(admin_key))
    assert (failed.json()["ok"], failed.json()["statusCode"]) == (False, 500)
    gone = await wh_client.delete(f"/v1/webhooks/{hook['id']}", headers=auth(admin_key))
    assert gone.status_code == 204
    assert (
        await wh_client.get(f"/v1/webhooks/{hook['id']}", headers=auth(admin_key))
    ).status_code == 404


async def test_secrets_are_stored_encrypted(
    wh_client: httpx.AsyncClient,
    receiver: Receiver,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    import sqlalchemy as sa

    hook = await _create(wh_client, admin_key, url=receiver.url)
    async with db_sessionmaker() as db:
        stored = (await db.execute(sa.text("SELECT secret_encrypted FROM webhooks"))).scalar_one()
    raw = hook["secret"].removeprefix("whsec_")
    assert raw not in stored
    assert hook["secret"] not in stored


async def test_sends_are_bounded_per_endpoint_and_overall(
    make_settings: Any,
    database_url: str,
    redis: Any,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Two connections per endpoint, three in all: two endpoints never get four at once."""
    from tests.fixtures.webhooks import InFlight

    settings = settings_with_key(
        make_settings,
        database_url,
        webhooks={
            "allow_private": True,
            "poll_interval_s": 0.05,
            "per_endpoint_concurrency": 2,
            "max_concurrency": 3,
        },
    )
    overall = InFlight()
    a, b = (Receiver(delay_s=0.1, shared=overall).start() for _ in range(2))
    try:
        async with running_api_for(settings) as client:
            for r in (a, b):
                await _create(client, admin_key, url=r.url)
            # Eight sessions: enough independent in-order streams to use every connection.
            events = [status_event(f"s{i % 8}", i) for i in range(32)]
            await feed(db_sessionmaker, events, owner_key_id=None, session_id=None)
            await wait_for_async(
                "len(a.received) == 32 and len(b.received) == 32",
                lambda: len(a.received) == 32 and len(b.received) == 32,
                timeout=30,
            )
    finally:
        a.stop()
        b.stop()
    assert max(a.in_flight.most, b.in_flight.most) == 2
    assert overall.most == 3


def _classify(code: int | None, retry_after: str | None = None, **row: Any) -> Any:
    from appliance.settings import WebhooksSettings
    from appliance.webhooks.verdicts import Row, classify

    at = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    made = Row(
        id="d1",
        event_id="e1",
        session="s",
        payload={},
        attempts=row.get("attempts", 0),
        created_at=row.get("created_at", at),
    )
    return classify(
        made,
        status_code=code,
        retry_after=retry_after,
        error=None,
        latency_ms=3,
        at=at,
        settings=WebhooksSettings(),
    ), at


def test_each_answer_is_classified_as_the_issue_says() -> None:
    assert _classify(204)[0].verdict == "delivered"
    gone, _ = _classify(410)
    assert (gone.verdict, gone.disable_endpoint) == ("failed", "the receiver answered 410 Gone")
    for permanent in (400, 401, 404, 422):
        assert _classify(permanent)[0].verdict == "failed"
    for again in (408, 500, 503, None):  # None: no answer (timeout, refused)
        outcome, at = _classify(again)
        assert outcome.verdict == "retry"
        # The first retry: 5 s by default, with equal jitter (half of it fixed).
        assert timedelta(seconds=2.5) <= outcome.next_attempt_at - at <= timedelta(seconds=5)
    honoured, at = _classify(429, "120")
    assert (honoured.verdict, honoured.next_attempt_at - at) == ("retry", timedelta(seconds=120))


def test_backoff_grows_to_an_hour_and_the_last_try_is_dead_lettered() -> None:
    from appliance.settings import WebhooksSettings
    from appliance.webhooks.verdicts import backoff_s

    defaults = WebhooksSettings()
    delays = [backoff_s(n, defaults) for n in range(1, 16)]
    assert 2.5 <= delays[0] <= 5
    assert all(d <= 3600 for d in delays)
    assert delays[-1] >= 1800  # capped at an hour, jitter keeps at least half
    # A try whose next attempt would fall past the 24 h window is the last: dead.
    # Made 23 h 50 min before this try: even the shortest next wait (30 min) is too late.
    started = datetime(2026, 11, 25, 12, 10, tzinfo=UTC)
    outcome, _ = _classify(500, attempts=14, created_at=started)
    assert outcome.verdict == "dead"
    assert outcome.next_attempt_at is None


@pytest.mark.parametrize(("value", "expected"), [("7", 7.0), (None, None), ("soon", None)])
def test_retry_after_is_read_in_seconds(value: str | None, expected: float | None) -> None:
    from appliance.webhooks.verdicts import retry_after_s

    assert retry_after_s(value, datetime.now(UTC)) == expected


async def test_an_event_on_the_redis_stream_reaches_the_endpoints_of_its_session(
    wh_client: httpx.AsyncClient,
    receiver: Receiver,
    tenant_key: str,
    redis: Any,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """The real path: engine event on `wapp:events` -> consumer -> outbox -> dispatcher."""
    from appliance.redis_keys import EVENTS_STREAM

    await add_session(db_sessionmaker, "s1", key_id(tenant_key))
    hook = await _create(wh_client, tenant_key, url=receiver.url, session="s1")
    event = state_event("s1", "connected")
    await redis.xadd(EVENTS_STREAM, {"data": event.model_dump_json()})
    await redis.xadd(EVENTS_STREAM, {"data": event.model_dump_json()})  # redelivered: once
    await wait_for_async("len(receiver.received) == 1", lambda: len(receiver.received) == 1)
    payload = StandardWebhook(hook["secret"]).verify(
        receiver.received[0].body, receiver.received[0].headers
    )
    assert (payload["id"], payload["session"]) == (str(event.id), "s1")
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 1
