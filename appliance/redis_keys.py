"""Every Redis key and stream name, in one place; exported to the engine with the contracts.

No other module spells a `wapp:` key (tests/test_redis_keys.py greps for one): a key
written by one module and read by another cannot drift apart, and `TEMPLATES` below is
the whole map of what wapp keeps in Redis. Sessions are served by the engine of their
upstream (design.md: one process, one trusted root key), so engine-wide keys carry the
upstream.
"""

from __future__ import annotations

import re
from datetime import date
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


# --- api side only (the engine never reads these) -----------------------------------

# One sweep at a time across api workers (services/requeue.py).
REQUEUE_LOCK_KEY: Final = "wapp:requeue:lock"
# Counters every api worker adds to, so a scrape on any worker shows them all.
HTTP_REQUESTS_KEY: Final = "wapp:metrics:http:requests"
HTTP_DURATIONS_KEY: Final = "wapp:metrics:http:durations"
ENGINE_RESTARTS_KEY: Final = "wapp:metrics:engine-restarts"
RECONNECTS_KEY: Final = "wapp:metrics:reconnects"
# The watchdog's own record of what it did, and its newest sample per program.
WATCHDOG_EVENTS_STREAM: Final = "wapp:watchdog:events"
WATCHDOG_SAMPLE_KEY: Final = "wapp:watchdog:sample"


def qr_key(session: str) -> str:
    """The session's current QR (JSON), written by the event consumer with a TTL."""
    return f"wapp:qr:{session}"


def pairing_code_key(session: str) -> str:
    """The session's current pairing code (JSON), written like the QR."""
    return f"wapp:pairing-code:{session}"


def quota_key(key_id: str, day: date) -> str:
    """Messages an API key sent on one UTC day (`day` as YYYYMMDD)."""
    return f"wapp:quota:messages:{key_id}:{day:%Y%m%d}"


def auth_failures_key(address: str, key_id: str) -> str:
    """Refused keys from one address naming one key id (auth/throttle.py)."""
    return f"wapp:authfail:{address}|{key_id}"


def address_auth_failures_key(address: str) -> str:
    """Refused keys from one address, whatever id they named."""
    return f"wapp:authfail:{address}"


def consumer_liveness_key(name: str) -> str:
    """Set while an api worker's event consumer runs, so others may claim a dead one's work."""
    return f"wapp:api:consumer:{name}"


def engine_last_boot_key(upstream: Upstream) -> str:
    """The engine boot last counted as a restart (metrics/counters.py)."""
    return f"wapp:metrics:engine-boot:{upstream}"


def reconnect_seen_key(event_id: str) -> str:
    """Claimed once per reconnect event, so a redelivered event is not counted twice."""
    return f"wapp:metrics:reconnect-seen:{event_id}"


def reconnect_times_key(session: str) -> str:
    """Sorted set of a session's recent reconnect events (event id, scored by the time the
    engine reported it), trimmed to the last hour: how `wapp doctor` finds flapping."""
    return f"wapp:metrics:reconnect-times:{session}"


def engine_boot_alert_key(upstream: Upstream, pid: int, started_at: str) -> str:
    """Whoever sets this first (NX) alerts for this boot of the engine."""
    return f"wapp:alert:engine-boot:{upstream}:{pid}:{started_at}"


def alert_interval_key(subject: str) -> str:
    """Held for an alert's minimum interval: while it exists, the same alert is not sent."""
    return f"wapp:alerts:{subject}"


# Exported verbatim to engine/src/generated/redis-keys.json; `{name}` marks a parameter.
# Each entry is named after its constant or function above (test_redis_keys.py checks).
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
    "requeue_lock_key": REQUEUE_LOCK_KEY,
    "http_requests_key": HTTP_REQUESTS_KEY,
    "http_durations_key": HTTP_DURATIONS_KEY,
    "engine_restarts_key": ENGINE_RESTARTS_KEY,
    "reconnects_key": RECONNECTS_KEY,
    "watchdog_events_stream": WATCHDOG_EVENTS_STREAM,
    "watchdog_sample_key": WATCHDOG_SAMPLE_KEY,
    "qr_key": "wapp:qr:{session}",
    "pairing_code_key": "wapp:pairing-code:{session}",
    "quota_key": "wapp:quota:messages:{key_id}:{day}",
    "auth_failures_key": "wapp:authfail:{address}|{key_id}",
    "address_auth_failures_key": "wapp:authfail:{address}",
    "consumer_liveness_key": "wapp:api:consumer:{name}",
    "engine_last_boot_key": "wapp:metrics:engine-boot:{upstream}",
    "reconnect_seen_key": "wapp:metrics:reconnect-seen:{event_id}",
    "reconnect_times_key": "wapp:metrics:reconnect-times:{session}",
    "engine_boot_alert_key": "wapp:alert:engine-boot:{upstream}:{pid}:{started_at}",
    "alert_interval_key": "wapp:alerts:{subject}",
}


def pattern(name: str) -> str:
    """A SCAN/KEYS pattern for every key of one template: each `{parameter}` becomes `*`."""
    return re.sub(r"\{\w+\}", "*", TEMPLATES[name])
