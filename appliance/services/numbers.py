"""`check-numbers`: which phone numbers are on WhatsApp, asked through the engine.

The check is paced like a send (it goes on the session's stream), so the wait covers
one pacing interval; the engine LPUSHes a `CheckNumbersReply` to a one-shot list.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from appliance.contracts import CheckNumbersReply, NumberCheck
from appliance.db.models import Session
from appliance.errors import WappError
from appliance.services import commands, replies, sessions
from appliance.settings import Settings


class EngineRequestFailed(WappError):
    status = 502
    code = "ENGINE_REQUEST_FAILED"
    retryable = True


async def check(
    redis: aioredis.Redis, settings: Settings, session: Session, phones: list[str]
) -> list[NumberCheck]:
    sessions.require_connected(session)
    await commands.require_engine(redis, session.upstream)
    request_id, reply_to = replies.new_request()
    await commands.send(
        redis,
        "check_numbers",
        session=session.name,
        upstream=session.upstream,
        payload={"request_id": str(request_id), "phones": phones, "reply_to": reply_to},
    )
    reply = await replies.wait(
        redis,
        request_id=request_id,
        reply_to=reply_to,
        timeout_s=settings.sessions.reply_timeout_s,
    )
    if not isinstance(reply, CheckNumbersReply):
        raise EngineRequestFailed("the engine answered with another kind of reply")
    if not reply.ok:
        raise EngineRequestFailed(
            f"the engine could not check the numbers: {reply.reason or reply.code}",
            details={"engineCode": reply.code, "reason": reply.reason},
        )
    return reply.results
