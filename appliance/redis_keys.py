"""Every Redis key and stream name, in one place; exported to the engine with the contracts.

Sessions are served by the engine of their upstream (design.md: one process, one
trusted root key), so engine-wide keys carry the upstream.
"""

from __future__ import annotations

from typing import Final

from appliance.contracts import Upstream

PREFIX: Final = "wapp:"
EVENTS_STREAM: Final = "wapp:events"
ENGINE_CONSUMER_GROUP: Final = "engine"
API_CONSUMER_GROUP: Final = "api"


def engine_commands_stream(upstream: Upstream) -> str:
    """Session lifecycle commands (start/stop/logout/restart) for one engine."""
    return f"wapp:cmd:engine:{upstream}"


def session_commands_stream(session: str) -> str:
    """Message commands of one session, read only when its pacer holds a token."""
    return f"wapp:cmd:{session}"


def engine_heartbeat_key(upstream: Upstream) -> str:
    return f"wapp:engine:{upstream}:heartbeat"


def engine_sessions_key(upstream: Upstream) -> str:
    """Hash session -> its session_start payload (JSON): what the engine restores at start.

    Written by the engine on start, removed on stop and logout; the engine cannot read SQL.
    """
    return f"wapp:engine:{upstream}:sessions"


def auth_key(session: str) -> str:
    return f"wapp:auth:{session}"


def sent_mark_key(message_id: str) -> str:
    return f"wapp:sent:{message_id}"


def pacing_key(session: str) -> str:
    """The pacer's state (last send time, sends per UTC day): a restart keeps the pace."""
    return f"wapp:pacing:{session}"


def sent_ref_key(session: str, wa_id: str) -> str:
    """Our message id and trace id of a WhatsApp id we sent, to tie receipts back to it."""
    return f"wapp:sentref:{session}:{wa_id}"


def reply_key(request_id: str) -> str:
    """A one-shot list the engine LPUSHes a request's reply to (check_numbers, download_media)."""
    return f"wapp:reply:{request_id}"


def engine_wa_version_key(upstream: Upstream) -> str:
    """The WhatsApp Web version the engine last fetched (JSON `WaVersionInUse`); no TTL."""
    return f"wapp:engine:{upstream}:wa_version"


# Exported verbatim to engine/src/generated/redis-keys.json; `{name}` marks a parameter.
TEMPLATES: Final[dict[str, str]] = {
    "events_stream": EVENTS_STREAM,
    "engine_consumer_group": ENGINE_CONSUMER_GROUP,
    "api_consumer_group": API_CONSUMER_GROUP,
    "engine_commands_stream": "wapp:cmd:engine:{upstream}",
    "session_commands_stream": "wapp:cmd:{session}",
    "engine_heartbeat_key": "wapp:engine:{upstream}:heartbeat",
    "engine_sessions_key": "wapp:engine:{upstream}:sessions",
    "auth_key": "wapp:auth:{session}",
    "sent_mark_key": "wapp:sent:{message_id}",
    "reply_key": "wapp:reply:{request_id}",
    "pacing_key": "wapp:pacing:{session}",
    "sent_ref_key": "wapp:sentref:{session}:{wa_id}",
    "engine_wa_version_key": "wapp:engine:{upstream}:wa_version",
}
