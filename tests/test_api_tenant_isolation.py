"""Tenants do not meet: sandbox numbers and contacts belong to the key
that made them, and session names are per key."""

from __future__ import annotations

import asyncio

import httpx
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance import redis_keys
from appliance.auth import api_keys
from appliance.contracts import SessionStateEvent, SessionStatePayload
from appliance.db.models import Session, WebhookDelivery
from appliance.events.live import Visibility
from appliance.redis_keys import EVENTS_STREAM
from appliance.security.master_key import create_master_key
from tests.fixtures.api import ApiClientFactory, auth
from tests.fixtures.api_helpers import commands_on, control_commands, create_session, set_state
from tests.fixtures.sandbox import PHONE
from tests.fixtures.settings import MakeSettings

Db = async_sessionmaker[AsyncSession]
CONTACT = "15550100"


async def test_another_tenants_sandbox_phone_is_404_to_create_on_or_pair_with(
    sandbox_client: httpx.AsyncClient, tenant_key: str, other_tenant_key: str, admin_key: str
) -> None:
    await create_session(sandbox_client, tenant_key, "demo", upstream="sandbox", phone=PHONE)
    hijack = await sandbox_client.post(
        "/v1/sessions",
        json={"name": "mine", "upstream": "sandbox", "phone": PHONE},
        headers=auth(other_tenant_key),
    )
    assert hijack.status_code == 404, hijack.text
    assert hijack.json()["success"] is False
    own = await create_session(sandbox_client, other_tenant_key, "own", upstream="sandbox")
    by_code = await sandbox_client.post(
        f"/v1/sessions/{own['id']}/pairing-code",
        json={"phone": PHONE},
        headers=auth(other_tenant_key),
    )
    assert by_code.status_code == 404, by_code.text
    # Its own free number is fine, and then it is that tenant's.
    mine = await sandbox_client.post(
        "/v1/sessions",
        json={"name": "mine", "upstream": "sandbox", "phone": "15550002"},
        headers=auth(other_tenant_key),
    )
    assert mine.status_code == 201, mine.text
    taken = await sandbox_client.post(
        "/v1/sessions",
        json={"name": "again", "upstream": "sandbox", "phone": "15550002"},
        headers=auth(tenant_key),
    )
    assert taken.status_code == 404
    # Admins may see and use everything.
    admin = await sandbox_client.post(
        "/v1/sessions",
        json={"name": "ops", "upstream": "sandbox", "phone": "15550002"},
        headers=auth(admin_key),
    )
    assert admin.status_code == 201, admin.text


async def test_a_contact_belongs_to_the_key_that_made_it(
    sandbox_client: httpx.AsyncClient, tenant_key: str, other_tenant_key: str, admin_key: str
) -> None:
    made = await sandbox_client.put(
        f"/v1/sandbox/contacts/{CONTACT}", json={"pushName": "Alice"}, headers=auth(tenant_key)
    )
    assert made.status_code == 200, made.text
    assert made.json()["pushName"] == "Alice"
    await create_session(
        sandbox_client, other_tenant_key, "theirs", upstream="sandbox", phone=PHONE
    )
    for method, path, body in [
        ("PUT", f"/v1/sandbox/contacts/{CONTACT}", {"pushName": "Mallory"}),
        ("POST", f"/v1/sandbox/contacts/{CONTACT}/messages", {"session": "theirs", "text": "x"}),
        ("GET", f"/v1/sandbox/contacts/{CONTACT}/messages", None),
    ]:
        response = await sandbox_client.request(
            method, path, json=body, headers=auth(other_tenant_key)
        )
        assert response.status_code == 404, (method, path, response.text)
        assert "Alice" not in response.text
        assert response.json()["error"]["code"] == "NOT_FOUND"
    # The owner's contact is untouched, and an admin sees it.
    again = await sandbox_client.put(
        f"/v1/sandbox/contacts/{CONTACT}", json={"pushName": "Alice"}, headers=auth(tenant_key)
    )
    assert again.status_code == 200
    listed = await sandbox_client.get(
        f"/v1/sandbox/contacts/{CONTACT}/messages", headers=auth(admin_key)
    )
    assert listed.status_code == 200
    # A number another tenant's session uses cannot be anyone else's contact either.
    as_phone = await sandbox_client.put(
        f"/v1/sandbox/contacts/{PHONE}", json={}, headers=auth(tenant_key)
    )
    assert as_phone.status_code == 404


async def test_session_names_are_per_tenant_and_never_reveal_another_tenants(
    api_client: httpx.AsyncClient,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
    tenant_key: str,
    other_tenant_key: str,
    admin_key: str,
) -> None:
    first = await create_session(api_client, tenant_key, "sales-1")
    # Another tenant's name is no conflict (the old code answered 409 SESSION_EXISTS).
    second = await create_session(api_client, other_tenant_key, "sales-1")
    assert second["name"] == "sales-1"
    assert second["id"] != first["id"]
    # Its own name is.
    dup = await api_client.post("/v1/sessions", json={"name": "sales-1"}, headers=auth(tenant_key))
    assert dup.status_code == 409
    assert dup.json()["error"]["code"] == "SESSION_EXISTS"
    for key, expected in ((tenant_key, first), (other_tenant_key, second)):
        got = await api_client.get("/v1/sessions/sales-1", headers=auth(key))
        assert got.json()["id"] == expected["id"]
        listed = await api_client.get("/v1/sessions", headers=auth(key))
        assert [s["name"] for s in listed.json()["items"]] == ["sales-1"]
    # Box-wide, the engine knows them apart by their engine names.
    async with db_sessionmaker() as db:
        rows = {
            r.id: r
            for r in (
                await db.scalars(sa.select(Session).where(col(Session.display_name) == "sales-1"))
            ).all()
        }
    assert rows[first["id"]].name == "sales-1"
    engine_name = rows[second["id"]].name
    assert engine_name.startswith("sales-1-")
    starts = [c.session for c in await control_commands(redis) if c.type == "session_start"]
    assert starts == ["sales-1", engine_name]
    # The second tenant's sends go to its own session's stream.
    await set_state(db_sessionmaker, second["id"], "connected")
    sent = await api_client.post(
        "/v1/sessions/sales-1/messages",
        json={"type": "text", "to": "4915112345678", "text": "hi"},
        headers=auth(other_tenant_key),
    )
    assert sent.status_code == 202, sent.text
    assert sent.json()["session"] == "sales-1"
    assert await commands_on(redis, redis_keys.session_commands_stream(engine_name))
    assert not await commands_on(redis, redis_keys.session_commands_stream("sales-1"))
    # Deleting its "sales-1" deletes its own only.
    gone = await api_client.delete("/v1/sessions/sales-1", headers=auth(other_tenant_key))
    assert gone.status_code == 204
    still = await api_client.get("/v1/sessions/sales-1", headers=auth(tenant_key))
    assert still.json()["id"] == first["id"]
    # An admin finds the session by its engine name too.
    by_admin = await api_client.get("/v1/sessions/sales-1", headers=auth(admin_key))
    assert by_admin.json()["id"] == first["id"]


async def test_a_tenant_scopes_webhooks_by_its_own_session_name(
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    redis: aioredis.Redis,
    tenant_key: str,
    other_tenant_key: str,
) -> None:
    # Webhooks need the master key; the endpoint is a loopback one.
    settings = make_settings(database={"url": database_url}, webhooks={"allow_private": True})
    create_master_key(settings.master_key_path)
    async with api_client_for(settings) as client:
        await create_session(client, tenant_key, "shop")
        own = await create_session(client, other_tenant_key, "shop")
        hook = await client.post(
            "/v1/webhooks",
            json={"url": "http://127.0.0.1:9/hook", "session": "shop"},
            headers=auth(other_tenant_key),
        )
    assert hook.status_code == 201, hook.text
    assert hook.json()["sessionId"] == own["id"]


async def test_webhooks_and_live_events_show_the_name_its_owner_gave(
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
    tenant_key: str,
    other_tenant_key: str,
) -> None:
    settings = make_settings(database={"url": database_url}, webhooks={"allow_private": True})
    create_master_key(settings.master_key_path)
    async with api_client_for(settings) as client:
        await create_session(client, tenant_key, "sales-1")
        second = await create_session(client, other_tenant_key, "sales-1")
        hook = await client.post(
            "/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers=auth(other_tenant_key)
        )
        assert hook.status_code == 201, hook.text
        async with db_sessionmaker() as db:
            engine_name = (await db.get(Session, second["id"])).name  # type: ignore[union-attr]
        assert engine_name != "sales-1"
        # The engine reports the session by its engine name, as it knows it.
        event = SessionStateEvent(
            session=engine_name, payload=SessionStatePayload(state="connecting")
        )
        await redis.xadd(EVENTS_STREAM, {"data": event.model_dump_json()})
        for _ in range(200):
            async with db_sessionmaker() as db:
                deliveries = (
                    await db.scalars(
                        sa.select(WebhookDelivery).where(
                            col(WebhookDelivery.webhook_id) == hook.json()["id"]
                        )
                    )
                ).all()
            if deliveries:
                break
            await asyncio.sleep(0.05)
    assert [d.payload["session"] for d in deliveries] == ["sales-1"]
    # Live listeners (SSE, WebSocket) see it the same way.
    visibility = Visibility(
        reader=db_sessionmaker, key_id=api_keys.parse(other_tenant_key)[0], is_admin=False
    )
    assert await visibility.allows(event)
    assert (await visibility.shown(event)).session == "sales-1"
