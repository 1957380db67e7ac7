# ruff: noqa: F811  (fixtures imported from test_webhooks_support are requested by name)
"""A QR (or pairing code) leaves the delivery rows once its delivery is over: the QR
string carries the companion's ADV secret."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.contracts import SessionStateEvent, SessionStatePayload
from appliance.db.models import Webhook, WebhookDelivery
from appliance.settings import Settings, WebhooksSettings
from appliance.webhooks import pairing
from appliance.webhooks.verdicts import Row, classify
from tests.fixtures.api import auth
from tests.fixtures.waiting import wait_for_async
from tests.fixtures.webhooks import (  # noqa: F401  (fixtures)
    Receiver,
    feed,
    receiver,
    running_api_for,
    state_event,
    webhook_settings,
    wh_client,
)

QR = "2@SECRET-adv-part,companion-key,identity-key,adv-secret-XYZ"
CODE = "K7QW9ZP2"


def qr_event(session: str = "s1") -> SessionStateEvent:
    return SessionStateEvent(
        session=session,
        payload=SessionStatePayload(
            state="qr", qr=QR, qr_expires_at=datetime.now(UTC) + timedelta(seconds=60)
        ),
    )


def code_event(session: str = "s2") -> SessionStateEvent:
    return SessionStateEvent(
        session=session, payload=SessionStatePayload(state="pairing_code", pairing_code=CODE)
    )


async def _stored(sessions: async_sessionmaker[AsyncSession]) -> dict[str, tuple[str, Any]]:
    """Each delivery's (status, payload) by event id, and how its JSON reads on disk."""
    async with sessions() as db:
        rows = await db.execute(
            sa.select(WebhookDelivery.event_id, WebhookDelivery.status, WebhookDelivery.payload)
        )
        return {str(e): (str(s), p) for e, s, p in rows.tuples()}


async def _raw_payloads(sessions: async_sessionmaker[AsyncSession]) -> str:
    """Every payload as the database holds it (JSON text / JSONB cast to text)."""
    async with sessions() as db:
        rows = await db.execute(
            sa.select(sa.cast(WebhookDelivery.payload, sa.Text)).select_from(WebhookDelivery)
        )
        return " ".join(str(r) for r in rows.scalars().all())


async def test_a_delivered_qr_and_pairing_code_keep_no_secret_in_their_rows(
    wh_client: httpx.AsyncClient,
    receiver: Receiver,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    created = await wh_client.post(
        "/v1/webhooks", json={"url": receiver.url}, headers=auth(admin_key)
    )
    hook_id = created.json()["id"]
    qr, code, plain = qr_event(), code_event(), state_event("s3")
    await feed(db_sessionmaker, [qr, code, plain], owner_key_id=None, session_id=None)
    await wait_for_async("len(receiver.received) == 3", lambda: len(receiver.received) == 3)
    sent = {r.json["id"]: r.json for r in receiver.received}
    assert sent[str(qr.id)]["data"]["qr"] == QR  # the receiver gets the QR itself
    assert sent[str(code.id)]["data"]["pairingCode"] == CODE

    stored = await wait_for_async(
        '{s for s, _ in rows.values()} == {"delivered"}',
        lambda: _stored(db_sessionmaker),
        ok=lambda rows: {s for s, _ in rows.values()} == {"delivered"},
    )
    for event in (qr, code):
        _status, payload = stored[str(event.id)]
        assert payload["redacted"] is True
        assert (payload["data"]["qr"], payload["data"]["pairingCode"]) == (None, None)
        assert (payload["type"], payload["data"]["state"]) == ("session.state", event.payload.state)
    assert stored[str(plain.id)][1] == sent[str(plain.id)]  # other events keep their payload
    raw = await _raw_payloads(db_sessionmaker)
    assert QR not in raw
    assert "adv-secret" not in raw
    assert CODE not in raw

    # Replayed, a redacted QR has nothing left worth sending: dead at once, no post.
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    replayed = await wh_client.post(
        f"/v1/webhooks/{hook_id}/replay", params={"since": since}, headers=auth(admin_key)
    )
    assert replayed.json() == {"requeued": 3}
    await wait_for_async("len(receiver.received) == 4", lambda: len(receiver.received) == 4)
    stored = await wait_for_async(
        'all(s != "pending" for s, _ in rows.values())',
        lambda: _stored(db_sessionmaker),
        ok=lambda rows: all(s != "pending" for s, _ in rows.values()),
    )
    assert (stored[str(qr.id)][0], stored[str(code.id)][0]) == ("dead", "dead")
    await asyncio.sleep(0.3)
    assert [r.json["id"] for r in receiver.received[3:]] == [str(plain.id)]


async def test_a_qr_past_its_life_is_not_sent_and_is_dead_lettered_without_its_secret(
    webhook_settings: Settings,
    redis: Any,
    receiver: Receiver,
    admin_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with running_api_for(webhook_settings) as client:
        created = await client.post(
            "/v1/webhooks", json={"url": receiver.url}, headers=auth(admin_key)
        )
        assert created.status_code == 201
    # Enqueued while no api ran, and the api comes back two minutes later.
    qr = qr_event()
    await feed(db_sessionmaker, [qr], owner_key_id=None, session_id=None)
    async with db_sessionmaker.begin() as db:
        await db.execute(
            sa.update(WebhookDelivery).values(
                created_at=datetime.now(UTC) - timedelta(minutes=2),
                next_attempt_at=datetime.now(UTC) - timedelta(minutes=2),
            )
        )
    async with running_api_for(webhook_settings):
        stored = await wait_for_async(
            'rows[str(qr.id)][0] != "pending"',
            lambda: _stored(db_sessionmaker),
            ok=lambda rows: rows[str(qr.id)][0] != "pending",
        )
        await asyncio.sleep(0.3)
    status, payload = stored[str(qr.id)]
    assert status == "dead"
    assert payload["redacted"] is True
    assert payload["data"]["qr"] is None
    assert receiver.arrived == []
    async with db_sessionmaker() as db:
        error = (await db.execute(sa.select(WebhookDelivery.last_error))).scalar_one()
    assert error == pairing.EXPIRED_ERROR
    assert QR not in await _raw_payloads(db_sessionmaker)


async def test_a_stale_qr_of_a_disabled_endpoint_is_swept(
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Nobody sends a disabled endpoint's rows: the sweep dead-letters and redacts them."""
    async with db_sessionmaker.begin() as db:
        db.add(Webhook(url="https://example.com/h", secret_encrypted="x"))
    old_qr, new_qr, old_plain = qr_event("a"), qr_event("b"), state_event("c")
    await feed(db_sessionmaker, [old_qr, new_qr, old_plain], owner_key_id=None, session_id=None)
    async with db_sessionmaker.begin() as db:
        await db.execute(sa.update(Webhook).values(enabled=False))
        await db.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.event_id.in_([str(old_qr.id), str(old_plain.id)]))  # type: ignore[attr-defined]
            .values(created_at=datetime.now(UTC) - timedelta(seconds=pairing.MAX_AGE_S + 5))
        )
    assert await pairing.sweep(db_sessionmaker, db_sessionmaker) == 1
    assert await pairing.sweep(db_sessionmaker, db_sessionmaker) == 0
    stored = await _stored(db_sessionmaker)
    assert stored[str(old_qr.id)][0] == "dead"
    assert stored[str(old_qr.id)][1]["data"]["qr"] is None
    assert stored[str(new_qr.id)][0] == "pending"  # still within its life
    assert stored[str(new_qr.id)][1]["data"]["qr"] == QR
    assert stored[str(old_plain.id)][0] == "pending"  # not a pairing event: 24 h as usual
    assert orjson.dumps(stored[str(old_qr.id)][1]).find(QR.encode()) == -1


def test_a_qr_is_retried_for_a_minute_not_a_day() -> None:
    at = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    envelope = {"type": "session.state", "data": {"state": "qr", "qr": QR}}
    plain = {"type": "session.state", "data": {"state": "connected"}}

    def verdict(payload: dict[str, Any], age_s: float) -> str:
        row = Row("d", "e", "s", payload, 3, at - timedelta(seconds=age_s))
        return classify(
            row,
            status_code=503,
            retry_after=None,
            error=None,
            latency_ms=1,
            at=at,
            settings=WebhooksSettings(),
        ).verdict

    assert verdict(envelope, 1) == "retry"
    # The next try (at least 2.5 s away by default) would fall past the QR's minute.
    assert verdict(envelope, pairing.MAX_AGE_S - 2) == "dead"
    assert verdict(plain, pairing.MAX_AGE_S - 2) == "retry"
    assert pairing.is_pairing(pairing.redacted(envelope))
    assert not pairing.is_pairing(plain)
