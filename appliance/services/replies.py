"""Waiting for the engine's answer on a one-shot reply list (`wapp:reply:{request_id}`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from typing import cast

import redis.asyncio as aioredis

from appliance import redis_keys
from appliance.contracts import REPLY_ADAPTER, Reply
from appliance.errors import WappError

# BLPOP in short slices: the client's socket timeout (when one is set) must not cut a
# long wait, and each slice is a fresh chance to notice a closed connection.
_SLICE_S = 5.0


class EngineTimeout(WappError):
    status = 504
    code = "ENGINE_TIMEOUT"
    retryable = True


def new_request() -> tuple[uuid.UUID, str]:
    request_id = uuid.uuid4()
    return request_id, redis_keys.reply_key(str(request_id))


async def wait(
    redis: aioredis.Redis, *, request_id: uuid.UUID, reply_to: str, timeout_s: float
) -> Reply:
    """The engine's reply for `request_id`, or EngineTimeout after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        # BLPOP takes whole or fractional seconds; 0 would mean "forever".
        # redis-py types its commands as sync-or-async; on the asyncio client it awaits.
        found = await cast(
            Awaitable[list[bytes] | None],
            redis.blpop([reply_to], timeout=max(0.01, min(_SLICE_S, remaining))),
        )
        if found is None:
            continue
        reply = REPLY_ADAPTER.validate_json(found[1])
        if reply.request_id == request_id:
            return reply
    raise EngineTimeout(
        f"the engine did not answer within {timeout_s:g} s",
        details={"requestId": str(request_id), "timeoutS": timeout_s},
    )
