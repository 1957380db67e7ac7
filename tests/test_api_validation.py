"""Bad input gets a clear error in the one shape, never a 500:
bounded integers, unreadable multipart, 405 with `Allow`, timestamps that are not
ISO 8601, and phone numbers written the way people write them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance.api.app import create_app
from appliance.contracts import (
    COMMAND_ADAPTER,
    MessageReceivedEvent,
    MessageReceivedPayload,
)
from appliance.redis_keys import EVENTS_STREAM
from appliance.settings import Settings
from tests.fixtures.api import ApiClientFactory, auth
from tests.fixtures.api_helpers import connected_session, put_heartbeat, session_commands
from tests.fixtures.settings import MakeSettings

Db = async_sessionmaker[AsyncSession]
JSON = {"Content-Type": "application/json"}


def _integers(schema: Any, defs: dict[str, Any], where: str) -> Iterator[tuple[str, Any]]:
    """Every integer schema under `schema`, with where it sits; `$ref`s followed once."""
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            yield from _integers(item, defs, f"{where}[{i}]")
        return
    if not isinstance(schema, dict):
        return
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name not in defs.get("__seen__", set()):
            defs.setdefault("__seen__", set()).add(name)
            yield from _integers(defs[name], defs, f"{where}->{name}")
        return
    if schema.get("type") == "integer":
        yield where, schema
    for key, value in schema.items():
        if key in ("properties", "$defs"):
            for name, sub in value.items():
                yield from _integers(sub, defs, f"{where}.{name}")
        elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties", "schema"):
            yield from _integers(value, defs, f"{where}.{key}")


def _unbounded(found: Iterator[tuple[str, Any]]) -> list[str]:
    return [
        where
        for where, schema in found
        # A constant or an enumeration is bounded by what it lists.
        if "const" not in schema
        and "enum" not in schema
        and not (
            ("minimum" in schema or "exclusiveMinimum" in schema)
            and ("maximum" in schema or "exclusiveMaximum" in schema)
        )
    ]


def test_every_integer_a_request_can_carry_has_both_bounds_in_the_openapi_document(
    db_settings: Settings,
) -> None:
    document = create_app(db_settings).openapi()
    components = document["components"]["schemas"]
    walked: list[tuple[str, Any]] = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                walked += _integers(
                    parameter["schema"], {**components}, f"{where} ?{parameter['name']}"
                )
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                walked += _integers(content["schema"], {**components}, f"{where} {media}")
    # The walk must have found the fields the fuzzing broke, or it proves nothing.
    found = " ".join(where for where, _ in walked)
    for name in ("maxSessions", "messagesPerDay", "dailyCap", "?limit"):
        assert name in found, name
    assert _unbounded(iter(walked)) == []


def test_every_integer_in_a_command_to_the_engine_has_both_bounds() -> None:
    schema = COMMAND_ADAPTER.json_schema()
    walked = list(_integers(schema, dict(schema.get("$defs", {})), "command"))
    assert any("daily_cap" in where for where, _ in walked)
    assert _unbounded(iter(walked)) == []


async def test_huge_integers_and_non_finite_numbers_answer_422_never_500(
    api_client: httpx.AsyncClient, admin_key: str, tenant_key: str
) -> None:
    admin, tenant = auth(admin_key), auth(tenant_key)
    key_id = (await api_client.get("/v1/keys/me", headers=tenant)).json()["id"]
    attempts: list[tuple[str, str, dict[str, str], bytes]] = [
        ("POST", "/v1/keys", admin, b'{"name": "k", "maxSessions": 9223372036854775808}'),
        ("POST", "/v1/keys", admin, b'{"name": "k", "messagesPerDay": 9223372036854775808}'),
        ("PUT", f"/v1/keys/{key_id}/quotas", admin, b'{"maxSessions": 9223372036854775808}'),
        ("PUT", f"/v1/keys/{key_id}/quotas", admin, b'{"messagesPerDay": 1e30}'),
        # A tenant key can do these.
        (
            "POST",
            "/v1/sessions",
            tenant,
            b'{"name": "s1", "pacing": {"dailyCap": 18446744073709551616}}',
        ),
        ("POST", "/v1/sessions", tenant, b'{"name": "s2", "pacing": {"minIntervalS": 1e400}}'),
        ("POST", "/v1/sessions", tenant, b'{"name": "s3", "pacing": {"maxIntervalS": NaN}}'),
        ("POST", "/v1/sessions", tenant, b'{"name": "s4", "pacing": {"maxIntervalS": Infinity}}'),
    ]
    for method, url, headers, body in attempts:
        response = await api_client.request(method, url, headers={**headers, **JSON}, content=body)
        assert response.status_code == 422, (url, body, response.text)
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"]["fields"], error
    # Nothing was created by the refused requests.
    listed = await api_client.get("/v1/sessions", headers=tenant)
    assert listed.json()["items"] == []
    # The largest allowed values still work.
    ok = await api_client.post(
        "/v1/sessions",
        headers=tenant,
        json={"name": "big", "pacing": {"dailyCap": 1_000_000, "maxIntervalS": 86400}},
    )
    assert ok.status_code == 201, ok.text


async def test_an_unreadable_multipart_send_answers_400_in_the_error_shape(
    api_client: httpx.AsyncClient, tenant_key: str, db_sessionmaker: Db, redis: aioredis.Redis
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    part = b'--xyz\r\nContent-Disposition: form-data; name="message"\r\n\r\n{}\r\n--xyz--\r\n'
    cases = [
        ("multipart/form-data", part),  # no boundary
        ("multipart/form-data; boundary=xyz", b"not multipart at all"),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nno colon here\r\n\r\nx\r\n--xyz--\r\n"),
        ("multipart/form-data; boundary=xyz", part.replace(b'; name="message"', b"")),
    ]
    for content_type, body in cases:
        response = await api_client.post(
            "/v1/sessions/sales-1/messages",
            headers={**auth(tenant_key), "Content-Type": content_type},
            content=body,
        )
        assert response.status_code == 400, (content_type, body, response.text)
        assert response.json()["success"] is False
        error = response.json()["error"]
        assert error["code"] == "INVALID_MULTIPART"
        assert error["message"].startswith("unreadable multipart body: ")
        assert error["details"]["reason"]
    assert await session_commands(redis, "sales-1") == []


def test_the_send_route_documents_its_400(db_settings: Settings) -> None:
    operation = create_app(db_settings).openapi()["paths"]["/v1/sessions/{session}/messages"]
    assert "INVALID_MULTIPART" in operation["post"]["responses"]["400"]["description"]


async def test_a_405_names_every_method_the_path_serves_in_allow(
    api_client: httpx.AsyncClient, tenant_key: str
) -> None:
    cases = [
        ("PUT", "/v1/sessions", "GET, POST"),
        ("PATCH", "/v1/sessions/sales-1/messages", "GET, POST"),
        ("PUT", "/v1/keys/me", "GET, DELETE"),
        ("POST", "/v1/messages/x", "GET"),
    ]
    for method, url, allow in cases:
        response = await api_client.request(method, url, headers=auth(tenant_key))
        assert response.status_code == 405, (method, url)
        assert response.headers["Allow"] == allow, (method, url)
        error = response.json()["error"]
        assert error["code"] == "METHOD_NOT_ALLOWED"
        assert error["details"]["allow"] == allow.split(", ")


async def test_timestamps_in_queries_must_be_iso_8601_not_numbers(
    api_client: httpx.AsyncClient, admin_key: str, db_sessionmaker: Db
) -> None:
    await connected_session(api_client, admin_key, db_sessionmaker)
    admin = auth(admin_key)
    urls = [
        "/v1/sessions/sales-1/messages?since=0.5",
        "/v1/sessions/sales-1/messages?since=1700000000",
        "/v1/sessions/sales-1/messages?since=yesterday",
        "/v1/webhooks/any/deliveries?before=0.5",
        "/v1/webhooks/any/deliveries?limit=0.5",
    ]
    for url in urls:
        response = await api_client.get(url, headers=admin)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    replay = await api_client.post("/v1/webhooks/any/replay?since=0.5", headers=admin)
    assert replay.status_code == 422, replay.text
    assert "ISO 8601" in replay.json()["error"]["message"]
    for since in ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01"):
        ok = await api_client.get(
            "/v1/sessions/sales-1/messages", params={"since": since}, headers=admin
        )
        assert ok.status_code == 200, (since, ok.text)


# --- phone numbers and chats ---------------------------------------------------------


async def test_a_number_written_as_people_write_it_is_sent_to_its_jid(
    api_client: httpx.AsyncClient, tenant_key: str, db_sessionmaker: Db, redis: aioredis.Redis
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    written = ["+15559000", "+1 555 9000", "+1-555-9000", "(1) 555.9000", "15559000@c.us"]
    for to in written:
        response = await api_client.post(
            "/v1/sessions/sales-1/messages",
            json={"type": "text", "to": to, "text": "hi", "mentions": [to]},
            headers=auth(tenant_key),
        )
        assert response.status_code == 202, (to, response.text)
    commands = await session_commands(redis, "sales-1")
    assert [(c.payload.to, c.payload.mentions) for c in commands] == [
        ("15559000@s.whatsapp.net", ["15559000@s.whatsapp.net"])
    ] * len(written)
    listed = (
        await api_client.get("/v1/sessions/sales-1/messages", headers=auth(tenant_key))
    ).json()
    assert {m["chat"] for m in listed["items"]} == {"15559000@s.whatsapp.net"}
    group = await api_client.post(
        "/v1/sessions/sales-1/messages",
        json={"type": "text", "to": "120363025246125486@g.us", "text": "hi all"},
        headers=auth(tenant_key),
    )
    assert group.status_code == 202
    assert (await session_commands(redis, "sales-1"))[-1].payload.to == "120363025246125486@g.us"


async def test_a_refused_number_says_what_a_valid_one_looks_like(
    api_client: httpx.AsyncClient, tenant_key: str, db_sessionmaker: Db
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    for to in ["+49", "12ab5678", "++4915112345678", "49 151 x", "", "1@x", "abc@s.whatsapp.net"]:
        response = await api_client.post(
            "/v1/sessions/sales-1/messages",
            json={"type": "text", "to": to, "text": "hi"},
            headers=auth(tenant_key),
        )
        assert response.status_code == 422, (to, response.text)
        message = response.json()["error"]["message"]
        assert "+4915112345678" in message, message
        assert "pattern" not in message, message
        assert "\\d" not in message, message
    for body in ({"name": "p1", "phone": "+49"}, {"name": "p2", "phone": "4915x"}):
        response = await api_client.post("/v1/sessions", json=body, headers=auth(tenant_key))
        assert response.status_code == 422
        assert "+4915112345678" in response.json()["error"]["message"]


async def test_session_phones_and_number_checks_accept_e164_and_keep_digits(
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
) -> None:
    settings = make_settings(database={"url": database_url}, sessions={"reply_timeout_s": 0.3})
    async with api_client_for(settings) as client:
        created = await client.post(
            "/v1/sessions",
            json={"name": "e164", "phone": "+49 151 1234-5678"},
            headers=auth(tenant_key),
        )
        assert created.status_code == 201, created.text
        assert created.json()["phone"] == "4915112345678"
        await connected_session(client, tenant_key, db_sessionmaker)
        await put_heartbeat(redis, rss_mb=100, sessions=1)
        # No engine answers; the command on the stream is what matters here.
        response = await client.post(
            "/v1/sessions/sales-1/check-numbers",
            json={"phones": ["+49 151 00001", "(49) 151-00002"]},
            headers=auth(tenant_key),
        )
        assert response.status_code == 504
        [command] = await session_commands(redis, "sales-1")
        assert command.payload.phones == ["4915100001", "4915100002"]
        typing = await client.post(
            "/v1/sessions/sales-1/presence",
            json={"state": "composing", "chat": "+49 151 00001"},
            headers=auth(tenant_key),
        )
        assert typing.status_code == 202, typing.text


async def test_inbound_and_outbound_show_the_chat_alike_and_no_device_suffix(
    api_client: httpx.AsyncClient, tenant_key: str, db_sessionmaker: Db, redis: aioredis.Redis
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    sent = await api_client.post(
        "/v1/sessions/sales-1/messages",
        json={"type": "text", "to": "+49 151 22222222", "text": "hello"},
        headers=auth(tenant_key),
    )
    assert sent.status_code == 202
    # What an engine reports for a message from a linked device of that number.
    event = MessageReceivedEvent(
        session="sales-1",
        payload=MessageReceivedPayload(
            wa_id="3A00DEVICE",
            chat="4915122222222:1@s.whatsapp.net",
            from_pn="4915122222222:1@s.whatsapp.net",
            from_lid="123456789012345:1@lid",
            sent_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
            kind="text",
            text="hello back",
        ),
    )
    await redis.xadd(EVENTS_STREAM, {"data": event.model_dump_json()})
    items: list[dict[str, Any]] = []
    for _ in range(200):
        listed = await api_client.get("/v1/sessions/sales-1/messages", headers=auth(tenant_key))
        items = listed.json()["items"]
        if len(items) == 2:
            break
        await asyncio.sleep(0.05)
    by_direction = {m["direction"]: m for m in items}
    assert set(by_direction) == {"in", "out"}, items
    assert (
        by_direction["in"]["chat"] == by_direction["out"]["chat"] == "4915122222222@s.whatsapp.net"
    )
    assert by_direction["in"]["senderPn"] == "4915122222222@s.whatsapp.net"
    assert by_direction["in"]["senderLid"] == "123456789012345@lid"


def test_the_contract_keeps_received_chats_and_senders_without_a_device() -> None:
    payload = MessageReceivedPayload(
        wa_id="X",
        chat="120363025246125486@g.us",
        from_pn="4915100000:12@s.whatsapp.net",
        from_lid="99:3@lid",
        sent_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
        kind="text",
    )
    assert (payload.chat, payload.from_pn, payload.from_lid) == (
        "120363025246125486@g.us",
        "4915100000@s.whatsapp.net",
        "99@lid",
    )


@pytest.mark.parametrize(
    ("path", "status"),
    [("+1 555-9000", 404), ("abc", 422), ("+49", 422)],
)
async def test_sandbox_contact_numbers_accept_e164(
    api_client: httpx.AsyncClient, tenant_key: str, path: str, status: int
) -> None:
    # The sandbox is off here: a valid number reaches the route (404, disabled), a bad
    # one is refused first with the one message.
    response = await api_client.get(
        f"/v1/sandbox/contacts/{path}/messages", headers=auth(tenant_key)
    )
    assert response.status_code == status, response.text
    if status == 422:
        assert "+4915112345678" in response.json()["error"]["message"]
