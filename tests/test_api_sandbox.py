from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.fixtures.api import ApiClientFactory, auth
from tests.fixtures.api_helpers import create_session, set_state
from tests.fixtures.sandbox import PHONE, Phone
from tests.fixtures.settings import MakeSettings

Db = async_sessionmaker[AsyncSession]
CONTACT = "15550100"


async def _wait_inbox(phone: Phone, count: int) -> list[str | None]:
    for _ in range(100):
        inbox = await phone.inbox()
        if len(inbox) >= count:
            return inbox
        await asyncio.sleep(0.1)
    raise AssertionError(f"the phone received {await phone.inbox()}")


async def test_a_contact_writes_to_a_sandbox_session_by_name_or_phone(
    sandbox_client: httpx.AsyncClient, tenant_key: str, phone: Phone
) -> None:
    await create_session(sandbox_client, tenant_key, "demo", upstream="sandbox", phone=PHONE)
    by_name = await sandbox_client.post(
        f"/v1/sandbox/contacts/{CONTACT}/messages",
        json={"session": "demo", "text": "hello shop", "pushName": "Alice"},
        headers=auth(tenant_key),
    )
    assert by_name.status_code == 201, by_name.text
    assert by_name.json()["session"] == "demo"
    assert by_name.json()["message"]["text"] == "hello shop"
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()
    by_phone = await sandbox_client.post(
        f"/v1/sandbox/contacts/{CONTACT}/messages",
        json={
            "to": PHONE,
            "media": {
                "kind": "image",
                "dataBase64": png,
                "mimetype": "image/png",
                "caption": "pic",
            },
        },
        headers=auth(tenant_key),
    )
    assert by_phone.status_code == 201, by_phone.text
    assert by_phone.json()["message"]["media"]["kind"] == "image"
    assert await _wait_inbox(phone, 2) == ["hello shop", "pic"]


async def test_a_tenant_sees_what_a_contact_received_from_its_own_sessions_only(
    sandbox_client: httpx.AsyncClient,
    tenant_key: str,
    other_tenant_key: str,
    admin_key: str,
    phone: Phone,
    db_sessionmaker: Db,
) -> None:
    mine = await create_session(sandbox_client, tenant_key, "demo", upstream="sandbox")
    # Paired without a phone asked at creation: the account's number comes from me_jid.
    await set_state(db_sessionmaker, mine["id"], "connected", me_jid=phone.jid, me_lid=phone.lid)
    await create_session(
        sandbox_client, other_tenant_key, "other", upstream="sandbox", phone="15550002"
    )
    # The contact must exist before the phone can write to it.
    created = await sandbox_client.post(
        f"/v1/sandbox/contacts/{CONTACT}/messages",
        json={"session": "demo", "text": "hi"},
        headers=auth(tenant_key),
    )
    assert created.status_code == 201, created.text
    wa_id = await phone.send(CONTACT, "your order shipped")
    for _ in range(100):
        got = await sandbox_client.get(
            f"/v1/sandbox/contacts/{CONTACT}/messages", headers=auth(tenant_key)
        )
        if got.json()["items"]:
            break
        await asyncio.sleep(0.1)
    assert [(m["id"], m["text"]) for m in got.json()["items"]] == [(wa_id, "your order shipped")]
    # The contact is the first tenant's: for another one it does not exist.
    theirs = await sandbox_client.get(
        f"/v1/sandbox/contacts/{CONTACT}/messages", headers=auth(other_tenant_key)
    )
    assert theirs.status_code == 404
    everything = await sandbox_client.get(
        f"/v1/sandbox/contacts/{CONTACT}/messages", headers=auth(admin_key)
    )
    assert len(everything.json()["items"]) == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"text": "no target"}, 422),
        ({"session": "demo"}, 422),
        ({"session": "demo", "to": PHONE, "text": "both"}, 422),
        ({"session": "demo", "text": "x", "media": {"kind": "image"}}, 422),
        ({"session": "demo", "text": 5}, 422),
        (
            {
                "session": "demo",
                "media": {"kind": "image", "dataBase64": "***", "mimetype": "image/png"},
            },
            422,
        ),
        (
            {
                "session": "demo",
                "media": {
                    "kind": "image",
                    "dataBase64": base64.b64encode(b"x" * 5000).decode(),
                    "mimetype": "image/png",
                },
            },
            413,
        ),
        ({"session": "nope", "text": "x"}, 404),
        ({"to": "15559999", "text": "x"}, 404),
        ({"session": "live", "text": "x"}, 409),
    ],
)
async def test_bad_sandbox_requests_are_refused(
    sandbox_client: httpx.AsyncClient, tenant_key: str, body: dict[str, object], status: int
) -> None:
    await create_session(sandbox_client, tenant_key, "demo", upstream="sandbox", phone=PHONE)
    await create_session(sandbox_client, tenant_key, "live", upstream="whatsapp")
    response = await sandbox_client.post(
        f"/v1/sandbox/contacts/{CONTACT}/messages", json=body, headers=auth(tenant_key)
    )
    assert response.status_code == status, response.text
    assert response.json()["success"] is False


async def test_another_tenants_sandbox_session_is_404_and_a_bad_contact_422(
    sandbox_client: httpx.AsyncClient, tenant_key: str, other_tenant_key: str
) -> None:
    await create_session(sandbox_client, tenant_key, "demo", upstream="sandbox", phone=PHONE)
    for body in ({"session": "demo", "text": "x"}, {"to": PHONE, "text": "x"}):
        response = await sandbox_client.post(
            f"/v1/sandbox/contacts/{CONTACT}/messages", json=body, headers=auth(other_tenant_key)
        )
        assert response.status_code == 404
    bad = await sandbox_client.post(
        "/v1/sandbox/contacts/+1555/messages",
        json={"session": "demo", "text": "x"},
        headers=auth(tenant_key),
    )
    assert bad.status_code == 422


async def test_the_simulators_refusal_carries_its_code(
    sandbox_client: httpx.AsyncClient, tenant_key: str
) -> None:
    # A sandbox number nobody paired: the simulator has no such account.
    await create_session(
        sandbox_client, tenant_key, "unpaired", upstream="sandbox", phone="15550077"
    )
    response = await sandbox_client.post(
        f"/v1/sandbox/contacts/{CONTACT}/messages",
        json={"session": "unpaired", "text": "x"},
        headers=auth(tenant_key),
    )
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert (error["code"], error["details"]["sandboxCode"]) == (
        "SANDBOX_REFUSED",
        "ACCOUNT_NOT_FOUND",
    )


async def test_the_sandbox_is_404_when_disabled_and_503_when_the_simulator_is_down(
    api_client: httpx.AsyncClient,
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    tenant_key: str,
) -> None:
    for method in ("GET", "POST"):
        off = await api_client.request(
            method,
            f"/v1/sandbox/contacts/{CONTACT}/messages",
            json={"session": "demo", "text": "x"},
            headers=auth(tenant_key),
        )
        assert off.status_code == 404, method
        assert "not enabled" in off.json()["error"]["message"]
    # Port 9 (discard) on loopback: nothing listens there.
    settings = make_settings(
        database={"url": database_url}, sandbox={"enabled": True, "control_port": 9}
    )
    async with api_client_for(settings) as client:
        await create_session(client, tenant_key, "demo", upstream="sandbox", phone=PHONE)
        down = await client.post(
            f"/v1/sandbox/contacts/{CONTACT}/messages",
            json={"session": "demo", "text": "x"},
            headers=auth(tenant_key),
        )
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "SANDBOX_UNAVAILABLE"


async def test_a_simulated_contact_is_created_and_its_receipts_retuned(
    sandbox_client: httpx.AsyncClient, admin_key: str
) -> None:
    created = await sandbox_client.put(
        "/v1/sandbox/contacts/15550200", json={"pushName": "Carol"}, headers=auth(admin_key)
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert (body["phone"], body["pushName"], body["readDelayMs"]) == ("15550200", "Carol", 1000)
    assert body["lid"].endswith("@lid")
    never = await sandbox_client.put(
        "/v1/sandbox/contacts/15550200",
        json={"readDelayMs": None, "deliveryDelayMs": 50},
        headers=auth(admin_key),
    )
    assert (never.json()["readDelayMs"], never.json()["deliveryDelayMs"]) == (None, 50)
    assert never.json()["lid"] == body["lid"]


async def test_bad_contact_settings_are_refused(
    sandbox_client: httpx.AsyncClient, admin_key: str
) -> None:
    negative = await sandbox_client.put(
        "/v1/sandbox/contacts/15550200", json={"readDelayMs": -1}, headers=auth(admin_key)
    )
    assert negative.status_code == 422
    bad_phone = await sandbox_client.put(
        "/v1/sandbox/contacts/not-a-phone", json={}, headers=auth(admin_key)
    )
    assert bad_phone.status_code == 422
    # A paired account's number cannot also be a simulated contact.
    taken = await sandbox_client.put(
        f"/v1/sandbox/contacts/{PHONE}", json={}, headers=auth(admin_key)
    )
    assert taken.status_code == 409
    assert taken.json()["error"]["details"]["sandboxCode"] == "PHONE_IN_USE"
    anonymous = await sandbox_client.put("/v1/sandbox/contacts/15550200", json={})
    assert anonymous.status_code == 401
