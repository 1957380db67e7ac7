from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance import redis_keys
from appliance.auth import api_keys
from appliance.db.models import Message, Session
from appliance.settings import Settings
from tests.fixtures.api import ApiClientFactory, auth
from tests.fixtures.api_helpers import control_commands, create_session, put_heartbeat, set_state
from tests.fixtures.settings import MakeSettings


async def test_creating_a_session_writes_the_row_and_queues_its_start(
    api_client: httpx.AsyncClient,
    tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    body = await create_session(
        api_client,
        tenant_key,
        "sales-1",
        pushName="Acme",
        pacing={"enabled": True, "dailyCap": 200},
    )
    assert (body["name"], body["upstream"], body["state"], body["active"]) == (
        "sales-1",
        "whatsapp",
        "created",
        True,
    )
    assert body["pacing"] == {"enabled": True, "daily_cap": 200}
    [start] = await control_commands(redis)
    assert start.type == "session_start"
    assert start.session == "sales-1"
    assert start.payload.upstream == "whatsapp"
    assert start.payload.push_name == "Acme"
    assert start.payload.pacing.daily_cap == 200
    async with db_sessionmaker() as db:
        row = await db.get(Session, body["id"])
    assert row is not None
    assert row.active is True
    key = await api_keys.authenticate(db_sessionmaker, tenant_key)
    assert row.owner_key_id == key.id


async def test_the_start_carries_the_requests_trace_id(
    api_client: httpx.AsyncClient, tenant_key: str, redis: aioredis.Redis
) -> None:
    response = await api_client.post(
        "/v1/sessions",
        json={"name": "traced"},
        headers={**auth(tenant_key), "X-Trace-Id": "trace-abc-123"},
    )
    assert response.status_code == 201
    [start] = await control_commands(redis)
    assert start.trace_id == "trace-abc-123"


async def test_a_taken_name_answers_409(api_client: httpx.AsyncClient, tenant_key: str) -> None:
    await create_session(api_client, tenant_key, "dup")
    again = await api_client.post("/v1/sessions", json={"name": "dup"}, headers=auth(tenant_key))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "SESSION_EXISTS"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body.name"),
        ({"name": 5}, "body.name"),
        ({"name": "Bad Name"}, "body.name"),
        ({"name": "ok", "upstream": "telegram"}, "body.upstream"),
        ({"name": "ok", "phone": "+49 151"}, "body.phone"),
        ({"name": "ok", "pacing": {"dailyCap": 0}}, "body.pacing.dailyCap"),
    ],
)
async def test_bad_session_bodies_answer_422_naming_the_field(
    api_client: httpx.AsyncClient, tenant_key: str, body: dict[str, object], field: str
) -> None:
    response = await api_client.post("/v1/sessions", json=body, headers=auth(tenant_key))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert field in {f["field"] for f in error["details"]["fields"]}


async def test_a_sandbox_session_is_refused_while_the_sandbox_is_off(
    api_client: httpx.AsyncClient, tenant_key: str
) -> None:
    response = await api_client.post(
        "/v1/sessions", json={"name": "s", "upstream": "sandbox"}, headers=auth(tenant_key)
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"][0]["field"] == "body.upstream"


async def test_a_sandbox_session_with_a_phone_goes_to_the_sandbox_engine(
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    tenant_key: str,
    redis: aioredis.Redis,
) -> None:
    settings = make_settings(database={"url": database_url}, sandbox={"enabled": True})
    async with api_client_for(settings) as client:
        await create_session(client, tenant_key, "demo", upstream="sandbox", phone="15550001")
    [start] = await control_commands(redis, "sandbox")
    assert (start.payload.upstream, start.payload.phone, start.payload.pairing) == (
        "sandbox",
        "15550001",
        "qr",
    )
    assert await control_commands(redis, "whatsapp") == []


async def test_a_keys_session_quota_answers_409(
    api_client: httpx.AsyncClient,
    admin_key: str,
) -> None:
    created = await api_client.post(
        "/v1/keys", json={"name": "small", "maxSessions": 1}, headers=auth(admin_key)
    )
    key = created.json()["key"]
    await create_session(api_client, key, "one")
    second = await api_client.post("/v1/sessions", json={"name": "two"}, headers=auth(key))
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "SESSION_QUOTA_EXCEEDED"
    assert second.json()["error"]["details"]["maxSessions"] == 1


async def test_beyond_the_appliances_maximum_a_session_answers_409(
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    tenant_key: str,
    other_tenant_key: str,
) -> None:
    settings = make_settings(database={"url": database_url}, sessions={"max_sessions": 1})
    async with api_client_for(settings) as client:
        await create_session(client, tenant_key, "only")
        refused = await client.post(
            "/v1/sessions", json={"name": "more"}, headers=auth(other_tenant_key)
        )
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "TOO_MANY_SESSIONS"


async def test_a_session_the_engines_memory_cannot_hold_answers_409(
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    tenant_key: str,
    redis: aioredis.Redis,
) -> None:
    settings = make_settings(
        database={"url": database_url},
        sessions={"engine_memory_budget_mb": 200, "session_estimate_mb": 20},
    )
    async with api_client_for(settings) as client:
        # 150 MB in use with nothing queued: one more (20 MB) fits, then a queued start
        # (not yet in the heartbeat's count) plus the next one do not (150 + 2 * 20 > 200).
        await put_heartbeat(redis, rss_mb=150, sessions=0)
        await create_session(client, tenant_key, "fits")
        await create_session(client, tenant_key, "fits-too")
        refused = await client.post(
            "/v1/sessions", json={"name": "too-many"}, headers=auth(tenant_key)
        )
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "ENGINE_MEMORY_FULL"
        assert error["details"]["budgetMb"] == 200
        # Once the engine reports it runs both, its RSS already holds them.
        await put_heartbeat(redis, rss_mb=150, sessions=2)
        await create_session(client, tenant_key, "now-fits")


async def test_a_tenant_lists_only_its_own_sessions_and_an_admin_all(
    api_client: httpx.AsyncClient, admin_key: str, tenant_key: str, other_tenant_key: str
) -> None:
    await create_session(api_client, tenant_key, "mine")
    await create_session(api_client, other_tenant_key, "theirs")
    mine = await api_client.get("/v1/sessions", headers=auth(tenant_key))
    assert [s["name"] for s in mine.json()["items"]] == ["mine"]
    everything = await api_client.get("/v1/sessions", headers=auth(admin_key))
    assert {s["name"] for s in everything.json()["items"]} == {"mine", "theirs"}


async def test_a_session_is_found_by_id_or_name_and_hidden_from_other_tenants(
    api_client: httpx.AsyncClient, tenant_key: str, other_tenant_key: str, admin_key: str
) -> None:
    body = await create_session(api_client, tenant_key, "findme")
    for ref in (body["id"], "findme"):
        found = await api_client.get(f"/v1/sessions/{ref}", headers=auth(tenant_key))
        assert found.json()["id"] == body["id"]
        assert (await api_client.get(f"/v1/sessions/{ref}", headers=auth(admin_key))).is_success
    for method, path in [
        ("GET", "/v1/sessions/findme"),
        ("DELETE", "/v1/sessions/findme"),
        ("POST", "/v1/sessions/findme/start"),
        ("POST", "/v1/sessions/findme/stop"),
        ("POST", "/v1/sessions/findme/restart"),
        ("POST", "/v1/sessions/findme/logout"),
        ("GET", "/v1/sessions/findme/qr"),
        ("GET", "/v1/sessions/findme/pairing-code"),
        ("GET", "/v1/sessions/findme/me"),
    ]:
        response = await api_client.request(method, path, headers=auth(other_tenant_key))
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "NOT_FOUND"
    unknown = await api_client.get("/v1/sessions/nope", headers=auth(tenant_key))
    assert unknown.status_code == 404


async def test_sessions_need_an_api_key(api_client: httpx.AsyncClient) -> None:
    assert (await api_client.get("/v1/sessions")).status_code == 401
    assert (await api_client.post("/v1/sessions", json={"name": "x"})).status_code == 401


@pytest.mark.parametrize(
    ("action", "command", "active"),
    [
        ("start", "session_start", True),
        ("stop", "session_stop", False),
        ("restart", "session_restart", True),
        ("logout", "session_logout", False),
    ],
)
async def test_lifecycle_actions_queue_their_command_and_set_active(
    api_client: httpx.AsyncClient,
    tenant_key: str,
    redis: aioredis.Redis,
    action: str,
    command: str,
    active: bool,
) -> None:
    body = await create_session(api_client, tenant_key, "life", phone="4915100000")
    await api_client.post("/v1/sessions/life/stop", headers=auth(tenant_key))
    await redis.delete(redis_keys.engine_commands_stream("whatsapp"))
    response = await api_client.post(
        f"/v1/sessions/{body['id']}/{action}", headers=auth(tenant_key)
    )
    assert response.status_code == 202, response.text
    assert response.json()["active"] is active
    [sent] = await control_commands(redis)
    assert (sent.type, sent.session) == (command, "life")
    if command == "session_start":
        # A later start repeats what the creation asked for.
        assert sent.payload.phone == "4915100000"


async def test_deleting_a_session_logs_it_out_and_removes_it_with_its_queue(
    api_client: httpx.AsyncClient,
    tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    body = await create_session(api_client, tenant_key, "gone")
    async with db_sessionmaker() as db, db.begin():
        db.add(
            Message(
                session_id=body["id"], direction="out", kind="text", chat="491", status="queued"
            )
        )
    await redis.xadd(redis_keys.session_commands_stream("gone"), {"data": "{}"})
    response = await api_client.delete("/v1/sessions/gone", headers=auth(tenant_key))
    assert response.status_code == 204
    assert [c.type for c in await control_commands(redis)] == ["session_start", "session_logout"]
    assert not await redis.exists(redis_keys.session_commands_stream("gone"))
    async with db_sessionmaker() as db:
        assert await db.get(Session, body["id"]) is None
        assert await db.scalar(sa.select(sa.func.count()).select_from(Message)) == 0
    assert (await api_client.get("/v1/sessions/gone", headers=auth(tenant_key))).status_code == 404


async def _store_qr(redis: aioredis.Redis, session: str, qr: str, ttl_s: int = 30) -> datetime:
    expires = datetime.now(UTC) + timedelta(seconds=ttl_s)
    value = {"qr": qr, "expires_at": expires.isoformat()}
    await redis.set(f"wapp:qr:{session}", orjson.dumps(value), ex=ttl_s)
    return expires


QR = "https://wa.me/settings/linked_devices#2@abc,def,ghi,jkl,1"


async def test_the_current_qr_is_served_as_json_png_and_svg(
    api_client: httpx.AsyncClient, tenant_key: str, redis: aioredis.Redis
) -> None:
    await create_session(api_client, tenant_key, "pair")
    none_yet = await api_client.get("/v1/sessions/pair/qr", headers=auth(tenant_key))
    assert none_yet.status_code == 404
    assert none_yet.json()["error"]["code"] == "NO_QR"
    expires = await _store_qr(redis, "pair", QR)
    as_json = await api_client.get("/v1/sessions/pair/qr", headers=auth(tenant_key))
    assert as_json.json()["qr"] == QR
    assert datetime.fromisoformat(as_json.json()["expiresAt"]) == expires
    png = await api_client.get("/v1/sessions/pair/qr?format=png", headers=auth(tenant_key))
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    svg = await api_client.get("/v1/sessions/pair/qr?format=svg", headers=auth(tenant_key))
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content
    bad = await api_client.get("/v1/sessions/pair/qr?format=gif", headers=auth(tenant_key))
    assert bad.status_code == 422


async def test_a_connected_session_has_no_qr(
    api_client: httpx.AsyncClient,
    tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    body = await create_session(api_client, tenant_key, "linked")
    await _store_qr(redis, "linked", QR)
    await set_state(db_sessionmaker, body["id"], "connected", me_jid="4915@s.whatsapp.net")
    response = await api_client.get("/v1/sessions/linked/qr", headers=auth(tenant_key))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "SESSION_ALREADY_CONNECTED"


async def test_pairing_by_code_queues_a_start_and_serves_the_code_once_it_arrives(
    api_client: httpx.AsyncClient, tenant_key: str, redis: aioredis.Redis
) -> None:
    await create_session(api_client, tenant_key, "bycode")
    await redis.delete(redis_keys.engine_commands_stream("whatsapp"))
    asked = await api_client.post(
        "/v1/sessions/bycode/pairing-code",
        json={"phone": "4915112345678"},
        headers=auth(tenant_key),
    )
    assert asked.status_code == 202
    assert asked.json()["phone"] == "4915112345678"
    [start] = await control_commands(redis)
    assert (start.type, start.payload.pairing, start.payload.phone) == (
        "session_start",
        "code",
        "4915112345678",
    )
    missing = await api_client.get("/v1/sessions/bycode/pairing-code", headers=auth(tenant_key))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NO_PAIRING_CODE"
    await redis.set(
        "wapp:pairing-code:bycode", orjson.dumps({"code": "ABCD1234", "expires_at": None}), ex=30
    )
    code = await api_client.get("/v1/sessions/bycode/pairing-code", headers=auth(tenant_key))
    assert code.json() == {"code": "ABCD1234", "expiresAt": None}


@pytest.mark.parametrize("body", [{}, {"phone": 4915}, {"phone": "+49 151"}])
async def test_a_pairing_code_needs_a_phone_in_digits(
    api_client: httpx.AsyncClient, tenant_key: str, body: dict[str, object]
) -> None:
    await create_session(api_client, tenant_key, "bycode")
    response = await api_client.post(
        "/v1/sessions/bycode/pairing-code", json=body, headers=auth(tenant_key)
    )
    assert response.status_code == 422


async def test_me_answers_409_until_paired_then_the_account(
    api_client: httpx.AsyncClient,
    tenant_key: str,
    db_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    body = await create_session(api_client, tenant_key, "who")
    before = await api_client.get("/v1/sessions/who/me", headers=auth(tenant_key))
    assert before.status_code == 409
    assert before.json()["error"]["code"] == "SESSION_NOT_PAIRED"
    await set_state(
        db_sessionmaker, body["id"], "connected", me_jid="4915@s.whatsapp.net", me_lid="99@lid"
    )
    after = await api_client.get("/v1/sessions/who/me", headers=auth(tenant_key))
    assert after.json()["jid"] == "4915@s.whatsapp.net"
    assert after.json()["lid"] == "99@lid"


def test_the_settings_fixture_keeps_the_sandbox_off(settings: Settings) -> None:
    # The 422 test above relies on it.
    assert settings.sandbox.enabled is False


async def test_starting_a_stopped_session_is_refused_when_the_engine_is_full(
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    tenant_key: str,
    redis: aioredis.Redis,
) -> None:
    settings = make_settings(
        database={"url": database_url},
        sessions={"engine_memory_budget_mb": 200, "session_estimate_mb": 20},
    )
    async with api_client_for(settings) as client:
        await create_session(client, tenant_key, "parked")
        await client.post("/v1/sessions/parked/stop", headers=auth(tenant_key))
        await put_heartbeat(redis, rss_mb=190, sessions=0)
        refused = await client.post("/v1/sessions/parked/start", headers=auth(tenant_key))
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "ENGINE_MEMORY_FULL"
        # An active session restarting adds nothing.
        await put_heartbeat(redis, rss_mb=100, sessions=0)
        assert (await client.post("/v1/sessions/parked/start", headers=auth(tenant_key))).is_success
        await put_heartbeat(redis, rss_mb=199, sessions=1)
        restart = await client.post("/v1/sessions/parked/restart", headers=auth(tenant_key))
        assert restart.status_code == 202
