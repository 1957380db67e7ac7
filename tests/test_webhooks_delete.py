# ruff: noqa: F811  (fixtures imported from test_webhooks_support are requested by name)
"""Deleting an endpoint while its deliveries are in flight.

A delete stops the endpoint's posts at once (only posts already on the wire may still
arrive), and the outcomes of other endpoints recorded in the same batch are never lost
or sent twice because of it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.db.models import Webhook, WebhookDelivery, WebhookDeliveryAttempt
from appliance.settings import Settings
from appliance.webhooks import service
from appliance.webhooks.recorder import Outcome, record
from tests.fixtures.api import auth
from tests.fixtures.waiting import wait_for_async
from tests.fixtures.webhooks import (  # noqa: F401  (fixtures)
    Receiver,
    feed,
    running_api_for,
    status_event,
    webhook_settings,
)

# A post that was on the wire when the delete returned may reach the receiver's handler a
# moment later (the server thread reads it); anything later was started after the delete.
ON_THE_WIRE_S = 0.1


async def _create(client: httpx.AsyncClient, key: str, url: str) -> str:
    response = await client.post("/v1/webhooks", json={"url": url}, headers=auth(key))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _rows(
    sessions: async_sessionmaker[AsyncSession], webhook_id: str
) -> list[tuple[str, str, int, int]]:
    """(event id, status, attempts, attempt rows) of each of the endpoint's deliveries."""
    async with sessions() as db:
        tried = (
            sa.select(sa.func.count())
            .select_from(WebhookDeliveryAttempt)
            .where(WebhookDeliveryAttempt.delivery_id == WebhookDelivery.id)  # type: ignore[arg-type]
            .scalar_subquery()
        )
        rows = await db.execute(
            sa.select(
                WebhookDelivery.event_id,
                WebhookDelivery.status,
                WebhookDelivery.attempts,
                tried,
            ).where(WebhookDelivery.webhook_id == webhook_id)  # type: ignore[arg-type]
        )
        return [(str(e), str(s), int(a), int(t)) for e, s, a, t in rows.tuples()]


async def _the_other_endpoint_got_everything_once(
    other: Receiver,
    other_id: str,
    events: list[Any],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await wait_for_async(
        "len(other.received) >= len(events)", lambda: len(other.received) >= len(events), timeout=30
    )
    await asyncio.sleep(1.0)  # a duplicate would come now (rows left pending, sent again)
    got = Counter(r.json["id"] for r in other.received)
    assert got == Counter(str(e.id) for e in events)
    rows = await wait_for_async(
        'all(status == "delivered" for _, status, _, _ in rows)',
        lambda: _rows(sessions, other_id),
        ok=lambda rows: all(status == "delivered" for _, status, _, _ in rows),
    )
    assert sorted(rows) == sorted((str(e.id), "delivered", 1, 1) for e in events)


async def _delete_mid_delivery(
    settings: Settings,
    admin_key: str,
    sessions: async_sessionmaker[AsyncSession],
    *,
    through_the_api: bool,
) -> None:
    slow = Receiver(delay_s=0.4).start()
    other = Receiver(delay_s=0.02).start()
    try:
        async with running_api_for(settings) as client:
            slow_id = await _create(client, admin_key, slow.url)
            other_id = await _create(client, admin_key, other.url)
            # Eight sessions: four posts at once to each endpoint, several rounds.
            events = [status_event(f"s{i % 8}", i) for i in range(40)]
            await feed(sessions, list(events), owner_key_id=None, session_id=None)
            await wait_for_async(
                "len(slow.arrived) >= 4", lambda: len(slow.arrived) >= 4
            )  # the slow posts are held
            if through_the_api:
                gone = await client.delete(f"/v1/webhooks/{slow_id}", headers=auth(admin_key))
                assert gone.status_code == 204
                allowed = ON_THE_WIRE_S
            else:
                # What `wapp webhooks rm` (another process) does: no in-process notice,
                # the dispatcher finds out at its next poll.
                await service.delete_webhook(
                    sessions, scope=service.Scope(None, True), webhook_id=slow_id
                )
                allowed = ON_THE_WIRE_S + 2 * settings.webhooks.poll_interval_s
            deleted_at = time.time()
            await _the_other_endpoint_got_everything_once(other, other_id, events, sessions)
            late = [t - deleted_at for t in slow.arrived if t > deleted_at + allowed]
            assert late == [], f"posts after the delete: {late}"
            assert len(slow.arrived) < len(events)
            assert await _rows(sessions, slow_id) == []
    finally:
        slow.stop()
        other.stop()


async def test_a_deleted_endpoint_gets_no_more_posts_and_the_others_lose_nothing(
    webhook_settings: Settings,
    redis: Any,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await _delete_mid_delivery(webhook_settings, admin_key, db_sessionmaker, through_the_api=True)


async def test_a_delete_made_elsewhere_stops_the_posts_at_the_next_poll(
    webhook_settings: Settings,
    redis: Any,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await _delete_mid_delivery(webhook_settings, admin_key, db_sessionmaker, through_the_api=False)


async def test_a_batch_with_a_deleted_endpoint_still_records_the_other_outcomes(
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """The recorder's batch: one endpoint deleted after its posts, one still there."""
    async with db_sessionmaker.begin() as db:
        hooks = [Webhook(url=f"https://example.com/{n}", secret_encrypted="x") for n in "ab"]
        db.add_all(hooks)
    gone, kept = (h.id for h in hooks)
    events = [status_event("s", i) for i in range(3)]
    assert await feed(db_sessionmaker, list(events), owner_key_id=None, session_id=None) == 6
    async with db_sessionmaker() as db:
        rows = (
            await db.execute(sa.select(WebhookDelivery.id, WebhookDelivery.webhook_id))
        ).tuples()
        by_hook: dict[str, list[str]] = {}
        for delivery_id, hook_id in rows:
            by_hook.setdefault(hook_id, []).append(delivery_id)
    await service.delete_webhook(db_sessionmaker, scope=service.Scope(None, True), webhook_id=gone)

    now = datetime.now(UTC)

    def delivered(delivery_id: str) -> Outcome:
        return Outcome(delivery_id, 1, now, 200, 5, None, "delivered")

    dropped = await record(
        db_sessionmaker,
        [
            (gone, [delivered(d) for d in by_hook[gone]]),
            (kept, [delivered(d) for d in by_hook[kept]]),
        ],
    )
    assert dropped == 3
    assert sorted(await _rows(db_sessionmaker, kept)) == sorted(
        (str(e.id), "delivered", 1, 1) for e in events
    )
    assert await _rows(db_sessionmaker, gone) == []


async def test_deletes_racing_the_recorder_never_fail_a_batch(
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Deletes and batches at the same time (on Postgres truly concurrent): every batch
    commits, and every outcome of an endpoint that stays is recorded. Several rounds: a
    lost race shows up in some of them (without the recorder's lock, about one run in
    three failed with a foreign-key violation on Postgres)."""
    scope = service.Scope(None, True)
    for _ in range(4):
        async with db_sessionmaker.begin() as db:
            hooks = [
                Webhook(url=f"https://example.com/{n}", secret_encrypted="x") for n in range(8)
            ]
            db.add_all(hooks)
        ids = [h.id for h in hooks]
        doomed, staying = ids[:4], ids[4:]
        await feed(
            db_sessionmaker,
            [status_event(f"s{i % 4}", i) for i in range(25)],
            owner_key_id=None,
            session_id=None,
        )
        by_hook: dict[str, list[str]] = {h: [] for h in ids}
        async with db_sessionmaker() as db:
            rows = await db.execute(sa.select(WebhookDelivery.id, WebhookDelivery.webhook_id))
            for delivery_id, hook_id in rows.tuples():
                by_hook[hook_id].append(delivery_id)
        now = datetime.now(UTC)
        # One batch per delivery index, each with one outcome of every endpoint.
        batches = [
            [(h, [Outcome(by_hook[h][i], 1, now, 200, 1, None, "delivered")]) for h in ids]
            for i in range(25)
        ]
        results = await asyncio.gather(
            *(record(db_sessionmaker, b) for b in batches),
            *(service.delete_webhook(db_sessionmaker, scope=scope, webhook_id=h) for h in doomed),
            return_exceptions=True,
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
        for h in staying:
            rows_of_h = await _rows(db_sessionmaker, h)
            assert len(rows_of_h) == 25
            assert {status for _, status, _, _ in rows_of_h} == {"delivered"}
        for h in doomed:
            assert await _rows(db_sessionmaker, h) == []
        # The next round starts with no endpoint (events go to every endpoint there is).
        for h in staying:
            await service.delete_webhook(db_sessionmaker, scope=scope, webhook_id=h)
