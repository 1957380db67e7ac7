from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appliance import redis_keys
from appliance.contracts import CheckNumbersReply, NumberCheck, wa_message_id
from appliance.db.models import Message, MessageStatusEvent
from tests.fixtures.api import ApiClientFactory, auth
from tests.fixtures.api_helpers import (
    connected_session,
    control_commands,
    create_session,
    inbound_message,
    put_heartbeat,
    session_commands,
    set_state,
)
from tests.fixtures.settings import MakeSettings

Db = async_sessionmaker[AsyncSession]
TO = "4915112345678"


async def _send(
    client: httpx.AsyncClient,
    key: str,
    body: dict[str, object],
    session: str = "sales-1",
    **kw: object,
) -> httpx.Response:
    headers = {**auth(key), **kw.pop("headers", {})}  # type: ignore[dict-item]
    return await client.post(f"/v1/sessions/{session}/messages", json=body, headers=headers)


async def test_a_text_is_queued_with_its_row_timeline_and_stream_entry(
    api_client: httpx.AsyncClient, tenant_key: str, redis: aioredis.Redis, db_sessionmaker: Db
) -> None:
    session = await connected_session(api_client, tenant_key, db_sessionmaker)
    response = await _send(
        api_client,
        tenant_key,
        {"type": "text", "to": TO, "text": "hi"},
        headers={"X-Trace-Id": "trace-send-1"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    message_id = uuid.UUID(body["id"])
    assert body["status"] == "queued"
    assert body["waId"] == wa_message_id(message_id)
    assert body["traceId"] == "trace-send-1"
    [command] = await session_commands(redis, "sales-1")
    assert command.type == "send_text"
    assert command.trace_id == "trace-send-1"
    # The envelope carries the message's id, so a rejection names the message.
    assert command.id == message_id
    # A number is sent to its JID, the form received messages name their chat in.
    assert (command.payload.message_id, command.payload.to, command.payload.text) == (
        message_id,
        f"{TO}@s.whatsapp.net",
        "hi",
    )
    # Paced work never goes on the engine's control stream.
    assert [c.type for c in await control_commands(redis)] == ["session_start"]
    async with db_sessionmaker() as db:
        row = await db.get(Message, body["id"])
        timeline = (await db.scalars(sa.select(MessageStatusEvent))).all()
    assert row is not None
    assert (row.session_id, row.direction, row.status, row.kind) == (
        session["id"],
        "out",
        "queued",
        "text",
    )
    assert [(e.message_id, e.status, e.trace_id) for e in timeline] == [
        (body["id"], "queued", "trace-send-1")
    ]


async def test_location_contact_reaction_reply_and_mentions_become_their_commands(
    api_client: httpx.AsyncClient, tenant_key: str, redis: aioredis.Redis, db_sessionmaker: Db
) -> None:
    session = await connected_session(api_client, tenant_key, db_sessionmaker)
    first = (await _send(api_client, tenant_key, {"type": "text", "to": TO, "text": "one"})).json()
    received = await inbound_message(db_sessionmaker, session["id"], wa_id="3AIN1")
    bodies: list[dict[str, object]] = [
        {"type": "location", "to": TO, "latitude": 52.5, "longitude": 13.4, "name": "Shop"},
        {
            "type": "contact",
            "to": TO,
            "displayName": "Ada",
            "vcard": "BEGIN:VCARD\nFN:Ada\nEND:VCARD",
        },
        {"type": "reaction", "to": TO, "messageId": first["id"], "emoji": "👍"},
        {
            "type": "text",
            "to": TO,
            "text": "@4915100000 yes",
            "replyTo": received,
            "mentions": ["4915100000"],
        },
    ]
    for body in bodies:
        response = await _send(api_client, tenant_key, body)
        assert response.status_code == 202, response.text
    commands = (await session_commands(redis, "sales-1"))[1:]
    assert [c.type for c in commands] == [
        "send_location",
        "send_contact",
        "send_reaction",
        "send_text",
    ]
    location, contact, reaction, reply = commands
    assert (location.payload.latitude, location.payload.name) == (52.5, "Shop")
    assert contact.payload.display_name == "Ada"
    assert reaction.payload.target.wa_id == first["waId"]
    assert reaction.payload.target.from_me is True
    assert reaction.payload.emoji == "👍"
    assert reply.payload.quoted.wa_id == "3AIN1"
    assert reply.payload.quoted.from_me is False
    assert reply.payload.quoted.text == "hello"
    assert reply.payload.mentions == ["4915100000@s.whatsapp.net"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "text", "text": "no recipient"}, "body.text.to"),
        ({"type": "text", "to": TO}, "body.text.text"),
        ({"type": "text", "to": TO, "text": ""}, "body.text.text"),
        ({"type": "text", "to": TO, "text": 5}, "body.text.text"),
        ({"type": "text", "to": "+49 151 x", "text": "x"}, "body.text.to"),
        ({"type": "text", "to": TO, "text": "x", "bogus": 1}, "body.text.bogus"),
        ({"type": "fax", "to": TO}, "body"),
        ({"to": TO, "text": "no type"}, "body"),
        ({"type": "location", "to": TO, "latitude": 91, "longitude": 0}, "body.location.latitude"),
        (
            {"type": "location", "to": TO, "latitude": "north", "longitude": 0},
            "body.location.latitude",
        ),
        ({"type": "reaction", "to": TO, "emoji": "x"}, "body.reaction.messageId"),
        ({"type": "image", "to": TO, "media": {"url": "not a url"}}, "body.image.media.url"),
        ({"type": "text", "to": TO, "text": "x", "replyTo": "nope"}, "body.text.replyTo"),
    ],
)
async def test_bad_message_bodies_answer_422_naming_the_field(
    api_client: httpx.AsyncClient,
    tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
    body: dict[str, object],
    field: str,
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    response = await _send(api_client, tenant_key, body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    fields = {f["field"] for f in error["details"]["fields"]}
    assert any(f.startswith(field) for f in fields), fields
    assert await session_commands(redis, "sales-1") == []


async def test_a_body_that_is_not_json_answers_422(
    api_client: httpx.AsyncClient, tenant_key: str, db_sessionmaker: Db
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    response = await api_client.post(
        "/v1/sessions/sales-1/messages",
        content=b"{not json",
        headers={**auth(tenant_key), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["success"] is False


async def test_a_json_send_over_a_mebibyte_answers_413_and_stores_nothing(
    api_client: httpx.AsyncClient, tenant_key: str, db_sessionmaker: Db, redis: aioredis.Redis
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    padding = "x" * (1024 * 1024)
    response = await api_client.post(
        "/v1/sessions/sales-1/messages",
        content=f'{{"type": "text", "to": "{TO}", "text": "{padding}"}}'.encode(),
        headers={**auth(tenant_key), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "PAYLOAD_TOO_LARGE"
    assert error["details"] == {"maxBytes": 1024 * 1024}
    assert await session_commands(redis, "sales-1") == []
    async with db_sessionmaker() as db:
        assert (await db.scalars(sa.select(Message))).all() == []


async def test_a_database_failure_on_send_answers_500_in_the_error_shape(
    api_client: httpx.AsyncClient, tenant_key: str, db_sessionmaker: Db, redis: aioredis.Redis
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    async with db_sessionmaker() as db, db.begin():
        await db.execute(sa.text("DROP TABLE message_status_events"))
    response = await _send(
        api_client,
        tenant_key,
        {"type": "text", "to": TO, "text": "hi"},
        headers={"X-Trace-Id": "trace-broken-db"},
    )
    assert response.status_code == 500
    assert response.headers["x-trace-id"] == "trace-broken-db"
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "INTERNAL_ERROR"
    assert "trace" in body["error"]["message"]
    assert await session_commands(redis, "sales-1") == []


async def test_an_image_without_media_answers_422(
    api_client: httpx.AsyncClient, tenant_key: str, db_sessionmaker: Db
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    response = await _send(api_client, tenant_key, {"type": "image", "to": TO})
    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"][0]["field"] == "body.media"


async def test_quoting_or_reacting_to_an_unknown_message_answers_422(
    api_client: httpx.AsyncClient, tenant_key: str, redis: aioredis.Redis, db_sessionmaker: Db
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    other = await connected_session(api_client, tenant_key, db_sessionmaker, "other")
    elsewhere = await inbound_message(db_sessionmaker, other["id"])
    for body in (
        {"type": "text", "to": TO, "text": "x", "replyTo": str(uuid.uuid4())},
        # A message of another session is not one this session can quote.
        {"type": "text", "to": TO, "text": "x", "replyTo": elsewhere},
        {"type": "reaction", "to": TO, "messageId": str(uuid.uuid4()), "emoji": "x"},
    ):
        response = await _send(api_client, tenant_key, body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "UNKNOWN_MESSAGE"
    assert await session_commands(redis, "sales-1") == []
    async with db_sessionmaker() as db:
        outbound = await db.scalar(
            sa.select(sa.func.count()).select_from(Message).where(Message.direction == "out")  # type: ignore[arg-type]
        )
    assert outbound == 0


async def test_a_session_that_is_not_connected_answers_409(
    api_client: httpx.AsyncClient, tenant_key: str, redis: aioredis.Redis
) -> None:
    await create_session(api_client, tenant_key, "sales-1")
    text = {"type": "text", "to": TO, "text": "x"}
    response = await _send(api_client, tenant_key, text)
    assert response.status_code == 409
    error = response.json()["error"]
    assert (error["code"], error["details"]["state"]) == ("SESSION_NOT_CONNECTED", "created")
    for path, body in [
        ("read", {"messageIds": [str(uuid.uuid4())]}),
        ("presence", {"state": "available"}),
        ("check-numbers", {"phones": ["4915100000"]}),
    ]:
        other = await api_client.post(
            f"/v1/sessions/sales-1/{path}", json=body, headers=auth(tenant_key)
        )
        assert other.status_code == 409, path
    assert await session_commands(redis, "sales-1") == []


async def test_unknown_and_other_tenants_sessions_answer_404(
    api_client: httpx.AsyncClient, tenant_key: str, other_tenant_key: str, db_sessionmaker: Db
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    text = {"type": "text", "to": TO, "text": "x"}
    assert (await _send(api_client, tenant_key, text, session="nope")).status_code == 404
    theirs = await _send(api_client, other_tenant_key, text)
    assert theirs.status_code == 404
    assert theirs.json()["error"]["code"] == "NOT_FOUND"
    for method, path in [
        ("GET", "/v1/sessions/sales-1/messages"),
        ("POST", "/v1/sessions/sales-1/read"),
        ("POST", "/v1/sessions/sales-1/presence"),
        ("POST", "/v1/sessions/sales-1/check-numbers"),
    ]:
        response = await api_client.request(
            method,
            path,
            headers=auth(other_tenant_key),
            json={"messageIds": [str(uuid.uuid4())], "state": "available", "phones": ["49151000"]},
        )
        assert response.status_code == 404, path


async def test_the_daily_quota_answers_429_with_retry_after(
    api_client: httpx.AsyncClient, admin_key: str, redis: aioredis.Redis, db_sessionmaker: Db
) -> None:
    created = await api_client.post(
        "/v1/keys", json={"name": "small", "messagesPerDay": 2}, headers=auth(admin_key)
    )
    key = created.json()["key"]
    await connected_session(api_client, key, db_sessionmaker)
    text = {"type": "text", "to": TO, "text": "x"}
    for _ in range(2):
        assert (await _send(api_client, key, text)).status_code == 202
    refused = await _send(api_client, key, text)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "MESSAGE_QUOTA_EXCEEDED"
    retry_after = int(refused.headers["Retry-After"])
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs(retry_after - (midnight - now).total_seconds()) < 5
    assert len(await session_commands(redis, "sales-1")) == 2
    counter = f"wapp:quota:messages:{created.json()['id']}:{now:%Y%m%d}"
    assert int(await redis.get(counter)) == 2
    assert 0 < await redis.ttl(counter) <= 2 * 86400


async def test_a_refused_send_gives_its_quota_back(
    api_client: httpx.AsyncClient, admin_key: str, db_sessionmaker: Db
) -> None:
    key = (
        await api_client.post(
            "/v1/keys", json={"name": "one", "messagesPerDay": 1}, headers=auth(admin_key)
        )
    ).json()["key"]
    await connected_session(api_client, key, db_sessionmaker)
    bad = {"type": "text", "to": TO, "text": "x", "replyTo": str(uuid.uuid4())}
    assert (await _send(api_client, key, bad)).status_code == 422
    assert (
        await _send(api_client, key, {"type": "text", "to": TO, "text": "x"})
    ).status_code == 202


async def test_an_idempotent_retry_returns_the_first_answer_and_sends_once(
    api_client: httpx.AsyncClient, tenant_key: str, redis: aioredis.Redis, db_sessionmaker: Db
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    text = {"type": "text", "to": TO, "text": "once"}
    first = await _send(api_client, tenant_key, text, headers={"Idempotency-Key": "order-42"})
    again = await _send(api_client, tenant_key, text, headers={"Idempotency-Key": "order-42"})
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()
    assert len(await session_commands(redis, "sales-1")) == 1
    changed = await _send(
        api_client,
        tenant_key,
        {**text, "text": "twice"},
        headers={"Idempotency-Key": "order-42"},
    )
    assert changed.status_code == 422
    assert changed.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert changed.json()["error"]["details"]["messageId"] == first.json()["id"]
    other_key = await _send(api_client, tenant_key, text, headers={"Idempotency-Key": "order-43"})
    assert other_key.json()["id"] != first.json()["id"]


async def test_concurrent_retries_with_one_key_store_one_message(
    api_client: httpx.AsyncClient, tenant_key: str, redis: aioredis.Redis, db_sessionmaker: Db
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    text = {"type": "text", "to": TO, "text": "race"}
    answers = await asyncio.gather(
        *[
            _send(api_client, tenant_key, text, headers={"Idempotency-Key": "same"})
            for _ in range(5)
        ]
    )
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(await session_commands(redis, "sales-1")) == 1


async def test_a_message_is_read_back_with_its_timeline(
    api_client: httpx.AsyncClient,
    tenant_key: str,
    other_tenant_key: str,
    admin_key: str,
    db_sessionmaker: Db,
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    sent = (await _send(api_client, tenant_key, {"type": "text", "to": TO, "text": "hi"})).json()
    later = datetime.now(UTC) + timedelta(seconds=1)
    async with db_sessionmaker() as db, db.begin():
        db.add(MessageStatusEvent(message_id=sent["id"], status="sent", at=later, trace_id="t-eng"))
    found = await api_client.get(f"/v1/messages/{sent['id']}", headers=auth(tenant_key))
    assert found.status_code == 200
    body = found.json()
    assert (body["direction"], body["kind"], body["content"]["text"]) == ("out", "text", "hi")
    # HTTP JSON is camelCase all the way down, the stored content included.
    assert body["content"]["waId"] == sent["waId"]
    assert "wa_id" not in body["content"]
    assert [(e["status"], e["traceId"]) for e in body["timeline"]] == [
        ("queued", sent["traceId"]),
        ("sent", "t-eng"),
    ]
    assert (await api_client.get(f"/v1/messages/{sent['id']}", headers=auth(admin_key))).is_success
    hidden = await api_client.get(f"/v1/messages/{sent['id']}", headers=auth(other_tenant_key))
    assert hidden.status_code == 404
    missing = await api_client.get(f"/v1/messages/{uuid.uuid4()}", headers=auth(tenant_key))
    assert missing.status_code == 404


async def test_messages_are_listed_newest_first_by_cursor_and_filtered(
    api_client: httpx.AsyncClient, tenant_key: str, db_sessionmaker: Db
) -> None:
    session = await connected_session(api_client, tenant_key, db_sessionmaker)
    sent = []
    for i in range(5):
        reply = await _send(api_client, tenant_key, {"type": "text", "to": TO, "text": f"m{i}"})
        sent.append(reply.json()["id"])
    received = await inbound_message(db_sessionmaker, session["id"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await api_client.get(
            "/v1/sessions/sales-1/messages", params=params, headers=auth(tenant_key)
        )
        assert page.status_code == 200, page.text
        seen += [m["id"] for m in page.json()["items"]]
        pages += 1
        cursor = page.json()["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [received, *reversed(sent)]
    inbound = await api_client.get(
        "/v1/sessions/sales-1/messages?direction=in", headers=auth(tenant_key)
    )
    assert [m["id"] for m in inbound.json()["items"]] == [received]
    queued = await api_client.get(
        "/v1/sessions/sales-1/messages?status=queued", headers=auth(tenant_key)
    )
    assert len(queued.json()["items"]) == 5
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    none = await api_client.get(
        "/v1/sessions/sales-1/messages", params={"since": future}, headers=auth(tenant_key)
    )
    assert none.json() == {"items": [], "nextCursor": None}


@pytest.mark.parametrize(
    "query",
    [
        "cursor=garbage",
        "limit=0",
        "limit=x",
        "direction=sideways",
        "status=lost",
        "since=yesterday",
    ],
)
async def test_bad_list_queries_answer_422(
    api_client: httpx.AsyncClient, tenant_key: str, db_sessionmaker: Db, query: str
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    response = await api_client.get(
        f"/v1/sessions/sales-1/messages?{query}", headers=auth(tenant_key)
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_read_receipts_go_to_the_control_stream_for_received_messages(
    api_client: httpx.AsyncClient, tenant_key: str, redis: aioredis.Redis, db_sessionmaker: Db
) -> None:
    session = await connected_session(api_client, tenant_key, db_sessionmaker)
    one = await inbound_message(db_sessionmaker, session["id"], wa_id="3AR1")
    two = await inbound_message(db_sessionmaker, session["id"], wa_id="3AR2")
    response = await api_client.post(
        "/v1/sessions/sales-1/read", json={"messageIds": [one, two]}, headers=auth(tenant_key)
    )
    assert response.status_code == 202
    assert response.json() == {"queued": 2}
    read = (await control_commands(redis))[-1]
    assert read.type == "mark_read"
    assert [(m.wa_id, m.from_me) for m in read.payload.messages] == [
        ("3AR1", False),
        ("3AR2", False),
    ]
    # Our own outbound messages are not something to mark read.
    sent = (await _send(api_client, tenant_key, {"type": "text", "to": TO, "text": "x"})).json()
    refused = await api_client.post(
        "/v1/sessions/sales-1/read", json={"messageIds": [sent["id"]]}, headers=auth(tenant_key)
    )
    assert refused.status_code == 422
    for body in ({}, {"messageIds": []}, {"messageIds": ["x"]}):
        bad = await api_client.post(
            "/v1/sessions/sales-1/read", json=body, headers=auth(tenant_key)
        )
        assert bad.status_code == 422


async def test_presence_goes_to_the_control_stream(
    api_client: httpx.AsyncClient, tenant_key: str, redis: aioredis.Redis, db_sessionmaker: Db
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    response = await api_client.post(
        "/v1/sessions/sales-1/presence",
        json={"state": "composing", "chat": "4915112345678@s.whatsapp.net"},
        headers=auth(tenant_key),
    )
    assert response.status_code == 202
    presence = (await control_commands(redis))[-1]
    assert (presence.type, presence.payload.state, presence.payload.chat) == (
        "presence",
        "composing",
        "4915112345678@s.whatsapp.net",
    )
    for body in ({}, {"state": "asleep"}, {"state": 1}):
        bad = await api_client.post(
            "/v1/sessions/sales-1/presence", json=body, headers=auth(tenant_key)
        )
        assert bad.status_code == 422


async def _answer_check(redis: aioredis.Redis, session: str) -> None:
    """Plays the engine's side of the contract: read the command, LPUSH the reply."""
    stream = redis_keys.session_commands_stream(session)
    while True:
        for command in await session_commands(redis, session):
            if command.type == "check_numbers":
                reply = CheckNumbersReply(
                    request_id=command.payload.request_id,
                    ok=True,
                    results=[
                        NumberCheck(phone=p, exists=p.endswith("1"), jid=f"{p}@s.whatsapp.net")
                        for p in command.payload.phones
                    ],
                )
                await redis.lpush(command.payload.reply_to, reply.model_dump_json())
                await redis.delete(stream)
                return
        await asyncio.sleep(0.02)


async def test_check_numbers_waits_for_the_engines_reply(
    api_client: httpx.AsyncClient, tenant_key: str, redis: aioredis.Redis, db_sessionmaker: Db
) -> None:
    await connected_session(api_client, tenant_key, db_sessionmaker)
    await put_heartbeat(redis, rss_mb=100, sessions=1)
    engine = asyncio.create_task(_answer_check(redis, "sales-1"))
    response = await api_client.post(
        "/v1/sessions/sales-1/check-numbers",
        json={"phones": ["4915100001", "4915100002"]},
        headers=auth(tenant_key),
    )
    await engine
    assert response.status_code == 200, response.text
    assert [(r["phone"], r["exists"]) for r in response.json()["results"]] == [
        ("4915100001", True),
        ("4915100002", False),
    ]


async def test_check_numbers_without_an_engine_answers_503_and_a_silent_one_504(
    api_client_for: ApiClientFactory,
    make_settings: MakeSettings,
    database_url: str,
    tenant_key: str,
    redis: aioredis.Redis,
    db_sessionmaker: Db,
) -> None:
    settings = make_settings(database={"url": database_url}, sessions={"reply_timeout_s": 0.3})
    async with api_client_for(settings) as client:
        await connected_session(client, tenant_key, db_sessionmaker)
        body = {"phones": ["4915100001"]}
        down = await client.post(
            "/v1/sessions/sales-1/check-numbers", json=body, headers=auth(tenant_key)
        )
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "ENGINE_UNAVAILABLE"
        assert await session_commands(redis, "sales-1") == []
        await put_heartbeat(redis, rss_mb=100, sessions=1)
        silent = await client.post(
            "/v1/sessions/sales-1/check-numbers", json=body, headers=auth(tenant_key)
        )
        assert silent.status_code == 504
        assert silent.json()["error"]["code"] == "ENGINE_TIMEOUT"
        [queued] = await session_commands(redis, "sales-1")
        assert queued.type == "check_numbers"
        for bad in ({}, {"phones": []}, {"phones": ["+49"]}, {"phones": ["49151000"] * 51}):
            response = await client.post(
                "/v1/sessions/sales-1/check-numbers", json=bad, headers=auth(tenant_key)
            )
            assert response.status_code == 422


async def test_an_idempotent_retry_is_answered_even_after_the_session_dropped(
    api_client: httpx.AsyncClient, tenant_key: str, db_sessionmaker: Db
) -> None:
    session = await connected_session(api_client, tenant_key, db_sessionmaker)
    text = {"type": "text", "to": TO, "text": "once"}
    first = await _send(api_client, tenant_key, text, headers={"Idempotency-Key": "k1"})
    await set_state(db_sessionmaker, session["id"], "reconnecting")
    again = await _send(api_client, tenant_key, text, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 202
    assert again.json() == first.json()
    fresh = await _send(api_client, tenant_key, text, headers={"Idempotency-Key": "k2"})
    assert fresh.status_code == 409


async def test_the_openapi_document_shows_every_message_type_and_both_encodings(
    api_client: httpx.AsyncClient,
) -> None:
    document = (await api_client.get("/openapi.json")).json()
    send = document["paths"]["/v1/sessions/{session}/messages"]["post"]
    content = send["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    examples = content["application/json"]["examples"]
    assert {"text", "image", "location", "contact", "reaction", "reply with mention"} <= set(
        examples
    )
    schema_types = {
        value
        for variant in content["application/json"]["schema"]["oneOf"]
        for value in variant["properties"]["type"].get(
            "enum", [variant["properties"]["type"].get("const")]
        )
    }
    assert schema_types == {
        "text", "image", "video", "audio", "voice", "document", "sticker",
        "location", "contact", "reaction",
    }  # fmt: skip
    assert {"202", "409", "413", "415", "422", "429"} <= set(send["responses"])
    assert "$defs" not in str(send)
    for path in (
        "/v1/sessions",
        "/v1/sessions/{session}/qr",
        "/v1/sessions/{session}/pairing-code",
        "/v1/messages/{message_id}",
        "/v1/messages/{message_id}/media",
        "/v1/sessions/{session}/check-numbers",
        "/v1/sandbox/contacts/{phone}/messages",
    ):
        for operation in document["paths"][path].values():
            assert operation["summary"], path
            assert "404" in operation["responses"] or path == "/v1/sessions", path


@pytest.mark.parametrize(
    "created_at",
    [
        datetime(2026, 11, 25, 23, 56, 54, 771473, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 0, 500, tzinfo=UTC),
    ],
)
def test_the_fast_paths_202_body_is_the_documented_models_byte_for_byte(
    created_at: datetime,
) -> None:
    from appliance.api.routes.messages import accepted_body, accepted_json
    from appliance.db.models import Session
    from appliance.services.messages import AcceptedRow

    row = AcceptedRow(id="m-1", wa_id="3EB0ABC", created_at=created_at, trace_id="t-1")
    session = Session(name="sales-1", upstream="whatsapp")
    documented = accepted_body(row, session).model_dump_json(by_alias=True).encode()
    assert accepted_json(row, session) == documented
