"""Engine commands: envelopes stamped with the request's trace id, XADDed to their stream.

Paced work (sends, number checks) goes on the session's own stream, which the engine
reads only when that session's pacer holds a token; everything else on the engine's
control stream for the session's upstream (contracts.PACED_COMMANDS decides).
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import redis.asyncio as aioredis

from appliance import redis_keys
from appliance.contracts import (
    COMMAND_ADAPTER,
    PACED_COMMANDS,
    EngineHeartbeat,
    Upstream,
)
from appliance.errors import WappError
from appliance.logs import new_trace_id, trace_id_var

# Streams are capped (approximately, which is cheap) so a dead engine cannot fill Redis.
STREAM_MAXLEN: Final = 100_000


class EngineUnavailable(WappError):
    status = 503
    code = "ENGINE_UNAVAILABLE"
    retryable = True


def build(type_: str, *, session: str, payload: Any, command_id: uuid.UUID | None = None) -> Any:
    """A validated command envelope of `type_`, carrying the current trace id.

    A message command takes the message's id as its own (`command_id`), so an engine's
    `command.rejected` names the message that failed.
    """
    envelope: dict[str, Any] = {
        "type": type_,
        "session": session,
        "trace_id": trace_id_var.get() or new_trace_id(),
        "payload": payload,
    }
    if command_id is not None:
        envelope["id"] = command_id
    return COMMAND_ADAPTER.validate_python(envelope)


def stream_for(command: Any, *, upstream: Upstream) -> str:
    if command.type in PACED_COMMANDS:
        return redis_keys.session_commands_stream(command.session)
    return redis_keys.engine_commands_stream(upstream)


async def enqueue(redis: aioredis.Redis, command: Any, *, upstream: Upstream) -> str:
    """XADD the envelope as the entry's one field `data`; returns the stream entry id."""
    entry_id = await redis.xadd(
        stream_for(command, upstream=upstream),
        {"data": command.model_dump_json()},
        maxlen=STREAM_MAXLEN,
        approximate=True,
    )
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def send(
    redis: aioredis.Redis, type_: str, *, session: str, upstream: Upstream, payload: Any
) -> Any:
    command = build(type_, session=session, payload=payload)
    await enqueue(redis, command, upstream=upstream)
    return command


async def heartbeat(redis: aioredis.Redis, upstream: Upstream) -> EngineHeartbeat | None:
    """The engine's last heartbeat, or None when its key expired (the engine is not alive)."""
    raw = await redis.get(redis_keys.engine_heartbeat_key(upstream))
    return EngineHeartbeat.model_validate_json(raw) if raw else None


async def require_engine(redis: aioredis.Redis, upstream: Upstream) -> EngineHeartbeat:
    """For requests that wait on the engine: fail at once rather than time out later."""
    beat = await heartbeat(redis, upstream)
    if beat is None:
        raise EngineUnavailable(
            f"the {upstream} engine is not running (no heartbeat)", details={"upstream": upstream}
        )
    return beat
