"""Every payload that crosses Redis between the api (Python) and the engine (Node).

Python is the single source of truth: `wapp contracts export` writes the JSON Schema of
these models (and TypeScript types generated from it) to `engine/src/generated/`; the
engine validates every command against that schema at runtime. JSON over Redis is
snake_case. Each message is one envelope: id, type, version, timestamp, session,
trace_id, payload.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from appliance import ids

CONTRACT_VERSION = 1

Upstream = Literal["whatsapp", "sandbox"]
SessionState = Literal[
    "created",
    "connecting",
    "qr",
    "pairing_code",
    "connected",
    "reconnecting",
    "logged_out",
    "failed",
    "stopped",
]
MediaKind = Literal["image", "video", "audio", "voice", "document", "sticker"]
MessageStatus = Literal["queued", "sending", "sent", "delivered", "read", "failed"]
ReceivedKind = Literal[
    "text",
    "image",
    "video",
    "audio",
    "voice",
    "document",
    "sticker",
    "location",
    "contact",
    "reaction",
    "unsupported",
]
# The digits of a phone number (country code first) or of a JID's user part: the one
# definition, also behind the api's normaliser (appliance/phones.py).
PHONE_DIGITS: Final = r"\d{5,20}"
# A recipient: a phone number in international form (digits only) or a full JID.
Recipient = Annotated[
    str, Field(min_length=3, max_length=128, pattern=rf"^({PHONE_DIGITS}|[^\s@]+@[a-z.]+)$")
]
SessionName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
# A phone number as the engine takes it: digits only (the api normalises what clients
# write, `appliance/phones.py`).
PhoneDigits = Annotated[str, Field(pattern=rf"^{PHONE_DIGITS}$")]

# Every integer has both bounds, so no value overflows a 64-bit column on the api side
# or loses precision as a JavaScript number in the engine (2^53 - 1 is its largest safe
# integer). Tighter bounds where the meaning sets one.
SAFE_INT = 2**53 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MAX_DAILY_CAP = 1_000_000
# A pacing interval over a day means "never send", which `enabled: false` says plainly.
MAX_INTERVAL_S = 86_400.0
Bytes = Annotated[int, Field(ge=0, le=SAFE_INT)]
Count = Annotated[int, Field(ge=0, le=SAFE_INT)]


def _without_device(jid: str) -> str:
    """`4915100000:1@s.whatsapp.net` -> `4915100000@s.whatsapp.net`: a chat or a sender
    is the user, not one of its devices (received events are kept in this form)."""
    user, at, server = jid.partition("@")
    return user.split(":", 1)[0] + at + server if at else jid


UserJid = Annotated[str, AfterValidator(_without_device)]


class Model(BaseModel):
    # Exported in serialization mode with defaults required: whatever Python puts on
    # Redis always carries every field, so the engine may rely on each one being there.
    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_serialization_defaults_required=True
    )


# --- payloads: commands -------------------------------------------------------------


class PacingOverrides(Model):
    enabled: bool | None = None
    min_interval_s: float | None = Field(default=None, ge=0, le=MAX_INTERVAL_S)
    max_interval_s: float | None = Field(default=None, ge=0, le=MAX_INTERVAL_S)
    daily_cap: int | None = Field(default=None, ge=1, le=MAX_DAILY_CAP)


class SessionStartPayload(Model):
    upstream: Upstream
    push_name: str | None = Field(default=None, max_length=64)
    pacing: PacingOverrides | None = None
    pairing: Literal["qr", "code"] = "qr"
    # The session's own number: needed to pair by code; in the sandbox, the simulated
    # phone that scans the QR so the session pairs itself.
    phone: PhoneDigits | None = None
    # When the number was paired, for the pacer's warm-up ramp (None: not yet paired).
    paired_at: datetime | None = None


class EmptyPayload(Model):
    pass


class MessageRef(Model):
    """A message already in a chat, as WhatsApp knows it (to quote or react to)."""

    wa_id: str = Field(min_length=1, max_length=128)
    chat: str = Field(min_length=3, max_length=128)
    from_me: bool
    # The author in a group chat; None in a 1:1 chat.
    participant: str | None = None
    # The quoted text shown in the reply bubble, when known.
    text: str | None = Field(default=None, max_length=4096)


class OutgoingBase(Model):
    message_id: uuid.UUID
    # Derived from message_id by `wa_message_id()`, so a re-send after a crash carries
    # the same WhatsApp id and the receiving side deduplicates it.
    wa_id: str = Field(min_length=8, max_length=64)
    to: Recipient
    quoted: MessageRef | None = None
    mentions: list[Recipient] = Field(default_factory=list, max_length=256)


class SendTextPayload(OutgoingBase):
    text: str = Field(min_length=1, max_length=65536)


class SendMediaPayload(OutgoingBase):
    kind: MediaKind
    # Exactly one source: a URL the engine downloads, or a blob the api stored on disk.
    url: str | None = Field(default=None, max_length=4096)
    blob_path: str | None = Field(default=None, max_length=4096)
    mimetype: str = Field(min_length=3, max_length=255)
    caption: str | None = Field(default=None, max_length=4096)
    filename: str | None = Field(default=None, max_length=255)

    @model_validator(mode="after")
    def _one_source(self) -> SendMediaPayload:
        if (self.url is None) == (self.blob_path is None):
            raise ValueError("exactly one of url and blob_path is required")
        return self


class SendLocationPayload(OutgoingBase):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    name: str | None = Field(default=None, max_length=256)
    address: str | None = Field(default=None, max_length=1024)


class SendContactPayload(OutgoingBase):
    display_name: str = Field(min_length=1, max_length=256)
    vcard: str = Field(min_length=10, max_length=16384)


class SendReactionPayload(OutgoingBase):
    target: MessageRef
    # An empty emoji removes an earlier reaction.
    emoji: str = Field(max_length=16)


class MarkReadPayload(Model):
    messages: list[MessageRef] = Field(min_length=1, max_length=256)


class PresencePayload(Model):
    state: Literal["available", "unavailable", "composing", "recording", "paused"]
    # Typing indicators are per chat; available/unavailable are global.
    chat: str | None = Field(default=None, max_length=128)


class CheckNumbersPayload(Model):
    request_id: uuid.UUID
    phones: list[PhoneDigits] = Field(min_length=1, max_length=50)
    # Redis list the engine LPUSHes its `CheckNumbersReply` to (the api waits on it).
    reply_to: str = Field(min_length=1, max_length=128)


class MediaRef(Model):
    """What the engine needs to fetch and decrypt a received attachment."""

    kind: MediaKind
    mimetype: str
    direct_path: str
    url: str | None = None
    media_key: str  # base64
    file_enc_sha256: str  # base64
    file_sha256: str | None = None  # base64
    file_length: Bytes | None = None


class DownloadMediaPayload(Model):
    request_id: uuid.UUID
    message_id: uuid.UUID
    media: MediaRef
    # Where the engine writes the decrypted bytes (inside the data dir's media cache).
    target_path: str = Field(min_length=1, max_length=4096)
    reply_to: str = Field(min_length=1, max_length=128)


class EngineBallastPayload(Model):
    """Sandbox only: the engine allocates this many MB and holds them until it exits, so a
    test can push it over the watchdog's memory limit (`wapp watchdog ballast`)."""

    mb: int = Field(ge=1, le=4096)


# --- payloads: events ---------------------------------------------------------------


class Me(Model):
    jid: str
    lid: str | None = None
    push_name: str | None = None


class SessionStatePayload(Model):
    state: SessionState
    reason: str | None = None
    reason_code: int | None = Field(default=None, ge=INT32_MIN, le=INT32_MAX)
    qr: str | None = None
    qr_expires_at: datetime | None = None
    pairing_code: str | None = None
    me: Me | None = None
    attempt: Count | None = None


class MessageStatusPayload(Model):
    message_id: uuid.UUID
    status: MessageStatus
    wa_id: str | None = None
    recipient: str | None = None
    code: str | None = None
    reason: str | None = None


class MediaInfo(Model):
    mimetype: str
    file_length: Bytes | None = None
    file_sha256: str | None = None
    filename: str | None = None
    caption: str | None = None
    seconds: Count | None = None
    # Kept so the attachment can be downloaded later (`download_media`).
    ref: MediaRef | None = None


class Location(Model):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    name: str | None = None
    address: str | None = None


class ContactCard(Model):
    display_name: str
    vcard: str


class Reaction(Model):
    emoji: str
    target_wa_id: str


class Quoted(Model):
    wa_id: str
    participant: str | None = None
    text: str | None = None


class PresenceUpdatePayload(Model):
    chat: str
    participant: str | None = None
    presence: Literal["available", "unavailable", "composing", "recording", "paused"]
    last_seen: datetime | None = None


class MessageReceivedPayload(Model):
    wa_id: str
    chat: UserJid
    from_pn: UserJid | None = None
    from_lid: UserJid | None = None
    push_name: str | None = None
    sent_at: datetime
    kind: ReceivedKind
    text: str | None = None
    media: MediaInfo | None = None
    location: Location | None = None
    contact: ContactCard | None = None
    reaction: Reaction | None = None
    quoted: Quoted | None = None
    mentions: list[str] = Field(default_factory=list)


class NumberCheck(Model):
    phone: str
    exists: bool
    jid: str | None = None
    lid: str | None = None


class CheckNumbersReply(Model):
    """LPUSHed by the engine to the command's `reply_to` list."""

    request_id: uuid.UUID
    ok: bool
    results: list[NumberCheck] = Field(default_factory=list)
    code: str | None = None
    reason: str | None = None


class DownloadMediaReply(Model):
    request_id: uuid.UUID
    ok: bool
    path: str | None = None
    size: Bytes | None = None
    code: str | None = None
    reason: str | None = None


class CommandRejectedPayload(Model):
    command_id: str | None = None
    command_type: str | None = None
    # SESSION_NOT_CONNECTED: a control-stream command (mark_read, presence) for a session
    # this engine holds but whose socket is not open; it is not retried.
    code: Literal[
        "INVALID_COMMAND", "UNKNOWN_SESSION", "UNSUPPORTED_COMMAND", "SESSION_NOT_CONNECTED"
    ]
    reason: str
    errors: list[dict[str, Any]] = Field(default_factory=list)


# --- envelopes ----------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


class EnvelopeBase(Model):
    id: uuid.UUID = Field(default_factory=ids.uuid4)
    version: Literal[1] = 1
    timestamp: datetime = Field(default_factory=_now)
    session: SessionName | None = None
    trace_id: str = Field(default_factory=ids.hex_id, min_length=1, max_length=64)


class SessionStartCommand(EnvelopeBase):
    type: Literal["session_start"] = "session_start"
    session: SessionName
    payload: SessionStartPayload


class SessionStopCommand(EnvelopeBase):
    type: Literal["session_stop"] = "session_stop"
    session: SessionName
    payload: EmptyPayload = EmptyPayload()


class SessionLogoutCommand(EnvelopeBase):
    type: Literal["session_logout"] = "session_logout"
    session: SessionName
    payload: EmptyPayload = EmptyPayload()


class SessionRestartCommand(EnvelopeBase):
    type: Literal["session_restart"] = "session_restart"
    session: SessionName
    payload: EmptyPayload = EmptyPayload()


class SendTextCommand(EnvelopeBase):
    type: Literal["send_text"] = "send_text"
    session: SessionName
    payload: SendTextPayload


class SendMediaCommand(EnvelopeBase):
    type: Literal["send_media"] = "send_media"
    session: SessionName
    payload: SendMediaPayload


class SendLocationCommand(EnvelopeBase):
    type: Literal["send_location"] = "send_location"
    session: SessionName
    payload: SendLocationPayload


class SendContactCommand(EnvelopeBase):
    type: Literal["send_contact"] = "send_contact"
    session: SessionName
    payload: SendContactPayload


class SendReactionCommand(EnvelopeBase):
    type: Literal["send_reaction"] = "send_reaction"
    session: SessionName
    payload: SendReactionPayload


class CheckNumbersCommand(EnvelopeBase):
    type: Literal["check_numbers"] = "check_numbers"
    session: SessionName
    payload: CheckNumbersPayload


class MarkReadCommand(EnvelopeBase):
    type: Literal["mark_read"] = "mark_read"
    session: SessionName
    payload: MarkReadPayload


class PresenceCommand(EnvelopeBase):
    type: Literal["presence"] = "presence"
    session: SessionName
    payload: PresencePayload


class DownloadMediaCommand(EnvelopeBase):
    type: Literal["download_media"] = "download_media"
    session: SessionName
    payload: DownloadMediaPayload


class EngineBallastCommand(EnvelopeBase):
    """Engine-wide (no session), on the sandbox engine's control stream; a whatsapp engine
    rejects it (UNSUPPORTED_COMMAND)."""

    type: Literal["engine_ballast"] = "engine_ballast"
    payload: EngineBallastPayload


class SessionStateEvent(EnvelopeBase):
    type: Literal["session.state"] = "session.state"
    session: SessionName
    payload: SessionStatePayload


class MessageStatusEvent(EnvelopeBase):
    type: Literal["message.status"] = "message.status"
    session: SessionName
    payload: MessageStatusPayload


class MessageReceivedEvent(EnvelopeBase):
    type: Literal["message.received"] = "message.received"
    session: SessionName
    payload: MessageReceivedPayload


class PresenceUpdateEvent(EnvelopeBase):
    type: Literal["presence.update"] = "presence.update"
    session: SessionName
    payload: PresenceUpdatePayload


class CommandRejectedEvent(EnvelopeBase):
    type: Literal["command.rejected"] = "command.rejected"
    payload: CommandRejectedPayload


class WaVersionRefusedPayload(Model):
    """WhatsApp refused a login because the client version is too old (failure 405)."""

    version: str
    source: Literal["fetched", "stored", "pinned"]
    reason_code: int = Field(ge=INT32_MIN, le=INT32_MAX)
    reason: str


class WaVersionRefusedEvent(EnvelopeBase):
    type: Literal["session.version_refused"] = "session.version_refused"
    payload: WaVersionRefusedPayload


Command = Annotated[
    SessionStartCommand
    | SessionStopCommand
    | SessionLogoutCommand
    | SessionRestartCommand
    | SendTextCommand
    | SendMediaCommand
    | SendLocationCommand
    | SendContactCommand
    | SendReactionCommand
    | CheckNumbersCommand
    | MarkReadCommand
    | PresenceCommand
    | DownloadMediaCommand
    | EngineBallastCommand,
    Field(discriminator="type"),
]
Event = Annotated[
    SessionStateEvent
    | MessageStatusEvent
    | MessageReceivedEvent
    | PresenceUpdateEvent
    | CommandRejectedEvent
    | WaVersionRefusedEvent,
    Field(discriminator="type"),
]

# Which stream a command travels on. Paced work waits in the session's own stream and is
# read only when the session's pacer holds a token; everything else goes on the engine's
# control stream, read continuously, so a read receipt never queues behind sends.
PACED_COMMANDS: frozenset[str] = frozenset(
    {"send_text", "send_media", "send_location", "send_contact", "send_reaction", "check_numbers"}
)


def wa_message_id(message_id: uuid.UUID) -> str:
    """The WhatsApp id of our message: deterministic, in the shape Baileys generates."""
    return "3EB0" + hashlib.sha256(b"wapp:" + message_id.bytes).hexdigest()[:18].upper()


Reply = CheckNumbersReply | DownloadMediaReply

COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
REPLY_ADAPTER: TypeAdapter[Reply] = TypeAdapter(Reply)
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


class HandshakeSlots(Model):
    """The engine's handshake slots (`max_concurrent_handshakes`) when the heartbeat was written.

    Ages are 0 when nobody holds or waits; a slot held or waited for longer than
    `[engine] handshake_stuck_after_s` makes `/readyz` name the engine as stuck.
    """

    limit: int = Field(ge=1, le=2_147_483_647)
    active: int = Field(ge=0, le=2_147_483_647)
    waiting: int = Field(ge=0, le=2_147_483_647)
    oldest_active_s: float = Field(ge=0)
    oldest_waiting_s: float = Field(ge=0)


class WaVersionInUse(Model):
    """The WhatsApp Web version the engine's sockets announce, and where it came from.

    `fetched`: read from `[engine] wa_version_url` at start or at the daily refresh;
    `stored`: the last fetched one, kept in Redis, when the fetch failed; `pinned`: the one
    Baileys ships with, when nothing better is known (offline since install).
    """

    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    source: Literal["fetched", "stored", "pinned"]
    checked_at: datetime


class EngineHeartbeat(Model):
    """The value of the engine's heartbeat key, refreshed every interval with a TTL.

    `at` and `session_states` are the engine's own view: which sessions it holds and in
    which state, when the heartbeat was written. The api shows a session whose engine does
    not hold it (or whose heartbeat is gone) as not connected (services/session_liveness.py).
    The defaults only serve heartbeats written by hand (tests); the engine writes every field.
    """

    pid: int = Field(ge=1, le=INT32_MAX)
    upstream: Upstream
    started_at: datetime
    uptime_s: float = Field(ge=0)
    rss_bytes: Bytes
    heap_used_bytes: Bytes
    heap_total_bytes: Bytes
    sessions: Count
    loop_lag_ms: float = Field(ge=0)
    node_version: str
    at: datetime | None = None
    session_states: dict[str, SessionState] = Field(default_factory=dict)
    handshakes: HandshakeSlots | None = None
    # The WhatsApp Web version new sockets log in with: WhatsApp refuses a stale one.
    wa_version: WaVersionInUse | None = None


class EnginePacing(Model):
    """The `[pacing]` defaults; a session's `PacingOverrides` apply over them."""

    enabled: bool
    min_interval_s: float = Field(ge=0)
    max_interval_s: float = Field(ge=0)
    daily_cap: int = Field(ge=1, le=SAFE_INT)
    warmup_days: int = Field(ge=0, le=SAFE_INT)
    warmup_daily_cap: int = Field(ge=1, le=SAFE_INT)
    composing_min_s: float = Field(ge=0)
    composing_max_s: float = Field(ge=0)


class EngineSessions(Model):
    """How the engine runs its sessions' sockets (the `[engine]` settings)."""

    # At most this many sessions handshake at once (restore at start, reconnect storms).
    max_concurrent_handshakes: int = Field(ge=1, le=SAFE_INT)
    # Reconnect backoff: full jitter over base * 2^attempt, capped.
    reconnect_base_s: float = Field(gt=0)
    reconnect_max_s: float = Field(gt=0)
    # Consecutive attempts that never reached `connected` before the session is `failed`.
    reconnect_max_attempts: int = Field(ge=1, le=SAFE_INT)
    # One byte budget for every process-wide cache handed to the sockets.
    cache_budget_mb: int = Field(ge=1, le=SAFE_INT)
    # Above this event-loop lag (p99 over ~1 s) the engine stops reading new commands.
    loop_lag_pause_ms: float = Field(gt=0)


class SandboxUpstream(Model):
    """Where a sandbox engine finds the simulator, and what makes Baileys trust it."""

    ws_url: str
    control_url: str
    # base64 of the 32-byte root public key (WA_CERT_DETAILS.PUBLIC_KEY).
    root_key_file: str
    # The media server's certificate; the launcher also puts it in NODE_EXTRA_CA_CERTS.
    ca_file: str


class EngineWaVersion(Model):
    """Where the engine reads the current WhatsApp Web version (`[engine] wa_version_*`)."""

    # A page carrying `"client_revision": N` (WhatsApp Web's service worker, as Baileys'
    # fetchLatestWaWebVersion reads it); the version is then 2.3000.N.
    url: str = "https://web.whatsapp.com/sw.js"
    # Short: an offline box falls back to the stored or pinned version without waiting.
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    refresh_s: float = Field(default=86_400.0, gt=0, le=SAFE_INT)


class EngineRuntimeConfig(Model):
    """What `wapp engine` hands the Node process (env `WAPP_ENGINE_CONFIG`, JSON).

    Built from Settings by the Python side so the engine never parses TOML itself; the
    engine validates it once at start against the exported schema.
    """

    upstream: Upstream
    redis_url: str
    log_level: Literal["debug", "info", "warning", "error"]
    data_dir: str
    master_key_file: str
    heartbeat_interval_s: float = Field(gt=0)
    heartbeat_ttl_s: float = Field(gt=0)
    pacing: EnginePacing
    sessions: EngineSessions
    # Only for `upstream = sandbox`; a whatsapp engine never trusts the simulator.
    sandbox: SandboxUpstream | None = None
    wa_version: EngineWaVersion = Field(default_factory=EngineWaVersion)
