from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from appliance.contracts import PACED_COMMANDS, CheckNumbersReply
from appliance.logs import trace_id_var
from appliance.services import commands, replies
from tests.fixtures.api_helpers import commands_on

MESSAGE = {"message_id": str(uuid.UUID(int=1)), "wa_id": "3EB0AAAAAAAA", "to": "4915100000"}
PAYLOADS = {
    "session_start": {"upstream": "sandbox"},
    "session_stop": {},
    "session_logout": {},
    "session_restart": {},
    "send_text": {**MESSAGE, "text": "x"},
    "send_media": {**MESSAGE, "kind": "image", "blob_path": "/b", "mimetype": "image/png"},
    "send_location": {**MESSAGE, "latitude": 1, "longitude": 2},
    "send_contact": {**MESSAGE, "display_name": "A", "vcard": "BEGIN:VCARD END"},
    "send_reaction": {
        **MESSAGE,
        "target": {"wa_id": "x", "chat": "4915100000", "from_me": True},
        "emoji": "x",
    },
    "check_numbers": {"request_id": str(uuid.uuid4()), "phones": ["4915100000"], "reply_to": "r"},
    "mark_read": {"messages": [{"wa_id": "x", "chat": "4915100000", "from_me": False}]},
    "presence": {"state": "available"},
    "download_media": {
        "request_id": str(uuid.uuid4()),
        "message_id": str(uuid.uuid4()),
        "media": {
            "kind": "image",
            "mimetype": "image/png",
            "direct_path": "/d",
            "media_key": "a",
            "file_enc_sha256": "b",
        },
        "target_path": "/t",
        "reply_to": "r",
    },
}


@pytest.mark.parametrize("type_", sorted(PAYLOADS))
async def test_paced_commands_go_on_the_sessions_stream_the_rest_on_the_engines(
    redis: aioredis.Redis, type_: str
) -> None:
    token = trace_id_var.set("trace-x")
    try:
        sent = await commands.send(
            redis, type_, session="shop", upstream="sandbox", payload=PAYLOADS[type_]
        )
    finally:
        trace_id_var.reset(token)
    paced = type_ in PACED_COMMANDS
    on_session = await commands_on(redis, "wapp:cmd:shop")
    on_engine = await commands_on(redis, "wapp:cmd:engine:sandbox")
    assert (on_session if paced else on_engine) == [sent]
    assert (on_engine if paced else on_session) == []
    assert sent.trace_id == "trace-x"


async def test_a_reply_for_another_request_is_not_taken_as_ours(redis: aioredis.Redis) -> None:
    request_id, reply_to = replies.new_request()
    stray = CheckNumbersReply(request_id=uuid.uuid4(), ok=True)
    ours = CheckNumbersReply(request_id=request_id, ok=True)

    async def engine() -> None:
        await asyncio.sleep(0.05)
        # LPUSH puts the stray one at the head: the waiter pops it first and goes on.
        await redis.lpush(reply_to, ours.model_dump_json())
        await redis.lpush(reply_to, stray.model_dump_json())

    task = asyncio.create_task(engine())
    reply = await replies.wait(redis, request_id=request_id, reply_to=reply_to, timeout_s=5)
    await task
    assert reply == ours


async def test_no_reply_in_time_is_an_engine_timeout(redis: aioredis.Redis) -> None:
    request_id, reply_to = replies.new_request()
    with pytest.raises(replies.EngineTimeout) as caught:
        await replies.wait(redis, request_id=request_id, reply_to=reply_to, timeout_s=0.2)
    assert (caught.value.status, caught.value.retryable) == (504, True)
