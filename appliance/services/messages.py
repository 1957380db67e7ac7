"""Sending, reading and listing messages.

A send: validate, resolve quotes and media, write the `messages` row (`queued`) with the
first timeline entry in one short transaction, then XADD the command on the session's
stream; the 202 answer carries the id. `Idempotency-Key` (per api key) returns the first
answer again for the same body and refuses a different body; the per-key daily quota
is a Redis counter per UTC day.

The row is the record: when the XADD after its commit fails, the send answers 503
`ENQUEUE_FAILED` with the message id (the row, its quota and its media stay), and the
command is enqueued by the replay of a retry or by the requeue sweep (`requeue`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import orjson
import redis.asyncio as aioredis
import sqlalchemy as sa
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance import ids, redis_keys
from appliance.auth.principal import Principal
from appliance.contracts import MessageRef, wa_message_id
from appliance.db.models import ApiKey, Message, MessageStatusEvent, Session
from appliance.db.types import new_id, utcnow
from appliance.errors import EnqueueFailed, NotFound, RateLimited, ValidationFailed
from appliance.services import commands, media, outgoing, requeue, sessions
from appliance.services.send_batcher import PendingSend, SendBatcher, send_alone
from appliance.settings import Settings

_QUOTA_TTL_S: Final = 2 * 86400


class IdempotencyMismatch(ValidationFailed):
    code = "IDEMPOTENCY_KEY_REUSED"


class MessageQuotaExceeded(RateLimited):
    code = "MESSAGE_QUOTA_EXCEEDED"


class UnknownMessageRef(ValidationFailed):
    code = "UNKNOWN_MESSAGE"


@dataclass(frozen=True)
class Upload:
    filename: str | None
    content_type: str | None
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class AcceptedRow:
    """What a 202 tells of a message just queued (a batched send builds no ORM row)."""

    id: str
    wa_id: str | None
    created_at: datetime
    trace_id: str | None


@dataclass(frozen=True)
class Accepted:
    message: Message | AcceptedRow
    replayed: bool


Body = (
    outgoing.TextBody
    | outgoing.MediaBody
    | outgoing.LocationBody
    | outgoing.ContactBody
    | outgoing.ReactionBody
)


# --- quota ---------------------------------------------------------------------------


def _seconds_to_midnight(now: datetime) -> int:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((tomorrow - now).total_seconds()) + 1)


async def take_quota(redis: aioredis.Redis, key: ApiKey) -> str | None:
    """Count one message against the key's daily quota; returns the counter to give back."""
    limit = key.messages_per_day
    if limit is None:
        return None
    now = datetime.now(UTC)
    counter = redis_keys.quota_key(key.id, now)
    used = int(await redis.incr(counter))
    if used == 1:
        await redis.expire(counter, _QUOTA_TTL_S)
    if used > limit:
        await redis.decr(counter)
        raise MessageQuotaExceeded(
            f"this API key may send {limit} messages per day (UTC); the quota is spent",
            retry_after_s=_seconds_to_midnight(now),
            details={"messagesPerDay": limit},
        )
    return counter


# --- references to earlier messages --------------------------------------------------


def message_ref(row: Message) -> MessageRef:
    """How WhatsApp knows one of our stored messages, to quote it, react to it, read it."""
    if row.wa_id is None:
        raise UnknownMessageRef(f"message {row.id} has no WhatsApp id yet", details={"id": row.id})
    text = row.payload.get("text") or row.payload.get("caption")
    group = row.chat.endswith("@g.us")
    return MessageRef(
        wa_id=row.wa_id,
        chat=row.chat,
        from_me=row.direction == "out",
        participant=(row.sender_lid or row.sender_pn) if group and row.direction == "in" else None,
        text=str(text)[:4096] if text else None,
    )


async def _messages_in_session(
    reader: async_sessionmaker[AsyncSession],
    session_id: str,
    ids: list[uuid.UUID],
    field: str,
    *,
    direction: Literal["in", "out"] | None = None,
) -> list[Message]:
    wanted = [str(i) for i in ids]
    query = sa.select(Message).where(
        col(Message.session_id) == session_id, col(Message.id).in_(wanted)
    )
    if direction is not None:
        query = query.where(col(Message.direction) == direction)
    async with reader() as db:
        found = {m.id: m for m in (await db.scalars(query)).all()}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise UnknownMessageRef(
            f"no such message in this session: {', '.join(missing)}",
            details={"fields": [{"field": field, "message": "unknown message"}], "ids": missing},
        )
    return [found[i] for i in wanted]


# --- sending -------------------------------------------------------------------------


def request_hash(body: Body, file_sha256: str | None) -> str:
    canonical = orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical + b"|" + (file_sha256 or "").encode()).hexdigest()


async def _existing(
    reader: async_sessionmaker[AsyncSession], key_id: str, idempotency_key: str
) -> Message | None:
    query = sa.select(Message).where(
        col(Message.api_key_id) == key_id, col(Message.idempotency_key) == idempotency_key
    )
    async with reader() as db:
        return (await db.scalars(query)).first()


def _replay(found: Message, digest: str | None, idempotency_key: str) -> Accepted:
    if found.request_hash != digest:
        raise IdempotencyMismatch(
            "this Idempotency-Key was used with a different request",
            details={"idempotencyKey": idempotency_key, "messageId": found.id},
        )
    return Accepted(message=found, replayed=True)


async def _media_blob(
    body: outgoing.MediaBody, upload: Upload | None, settings: Settings, message_id: uuid.UUID
) -> media.Blob:
    if upload is not None:
        declared = body.mimetype or upload.content_type or "application/octet-stream"
        blob = await media.store_bytes(
            upload.chunks, settings=settings, message_id=message_id, mimetype=declared
        )
    elif body.media is not None:
        blob = await media.fetch_url(
            str(body.media.url), settings=settings, message_id=message_id, mimetype=body.mimetype
        )
    else:
        raise ValidationFailed(
            f"a {body.type} message needs media.url or an uploaded file",
            details={"fields": [{"field": "body.media", "message": "required"}]},
        )
    # Blobs the engine has long sent (or never will) go after the retention age.
    await asyncio.to_thread(
        media.prune,
        settings.media_outbound_dir,
        max_age_s=settings.media.retention_max_age_h * 3600,
    )
    family = outgoing.KIND_FAMILY[body.type]
    if family is not None and not blob.mimetype.startswith(family):
        blob.path.unlink(missing_ok=True)
        raise media.MediaTypeNotAllowed(
            f"a {body.type} must be {family}*, not {blob.mimetype}",
            details={"mimetype": blob.mimetype, "kind": body.type},
        )
    return blob


async def send(
    *,
    writer: async_sessionmaker[AsyncSession],
    reader: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
    settings: Settings,
    principal: Principal,
    session: Session,
    body: Body,
    upload: Upload | None = None,
    idempotency_key: str | None = None,
    batcher: SendBatcher | None = None,
) -> Accepted:
    """Validate, store, enqueue; the answer comes only after the row committed and the
    command is in Redis. The api passes its `batcher` (the row commits with concurrent
    sends', the command is XADDed with theirs); a one-off caller without one (the CLI)
    stores and enqueues this send alone, as a failed batch's sends are."""
    if upload is not None and not isinstance(body, outgoing.MediaBody):
        raise ValidationFailed(
            f"a {body.type} message takes no file",
            details={"fields": [{"field": "file", "message": "unexpected"}]},
        )
    key_id = principal.key.id
    message_id = ids.uuid7()
    blob: media.Blob | None = None
    # An upload is stored first: its bytes are part of what the idempotency key covers.
    if upload is not None and isinstance(body, outgoing.MediaBody):
        blob = await _media_blob(body, upload, settings, message_id)
    # Only an Idempotency-Key retry is compared with its first request's body.
    digest = (
        request_hash(body, blob.sha256 if blob else None) if idempotency_key is not None else None
    )
    if idempotency_key is not None:
        found = await _existing(reader, key_id, idempotency_key)
        if found is not None:
            if blob is not None:
                blob.path.unlink(missing_ok=True)
            accepted = _replay(found, digest, idempotency_key)
            # The first request may have committed and then failed to XADD (a 503, or a
            # 500 before this fix): its command may be nowhere in Redis.
            await requeue.ensure_enqueued(reader, redis, found)
            return accepted
    # After the replay check: a retry gets its first answer even if the session dropped.
    try:
        sessions.require_connected(session)
    except sessions.SessionNotConnected:
        if blob is not None:
            blob.path.unlink(missing_ok=True)
        raise
    counter = await take_quota(redis, principal.key)
    message: AcceptedRow | None
    try:
        if isinstance(body, outgoing.MediaBody) and blob is None:
            blob = await _media_blob(body, None, settings, message_id)
        quoted = target = None
        if body.reply_to is not None:
            [row] = await _messages_in_session(reader, session.id, [body.reply_to], "body.replyTo")
            quoted = message_ref(row)
        if isinstance(body, outgoing.ReactionBody):
            [row] = await _messages_in_session(
                reader, session.id, [body.message_id], "body.messageId"
            )
            target = message_ref(row)
        payload = outgoing.to_payload(
            body,
            message_id=message_id,
            quoted=quoted,
            target=target,
            blob_path=str(blob.path) if blob else None,
            mimetype=blob.mimetype if blob else None,
        )
        command = commands.build(
            outgoing.COMMAND_TYPE[body.type],
            session=session.name,
            payload=payload,
            command_id=message_id,
        )
        message, pending = _rows(
            session, principal, body, command, message_id, idempotency_key, digest
        )
        if batcher is not None:
            stored = await batcher.submit(pending)
        else:
            stored = await send_alone(writer.begin, redis, pending, maxlen=commands.STREAM_MAXLEN)
        if not stored:
            message = None
    except EnqueueFailed:
        # The row is committed: its quota is spent, its media needed, and the requeue
        # sweep enqueues its command once Redis is back.
        raise
    except BaseException:
        if counter is not None:
            with contextlib.suppress(RedisError, OSError):  # Redis down: keep the error
                await redis.decr(counter)
        if blob is not None:
            blob.path.unlink(missing_ok=True)
        raise
    if message is None:
        # Another request with the same key won the race: answer as its replay.
        assert idempotency_key is not None
        found = await _existing(reader, key_id, idempotency_key)
        assert found is not None
        return _replay(found, digest, idempotency_key)
    return Accepted(message=message, replayed=False)


def _rows(
    session: Session,
    principal: Principal,
    body: Body,
    command: Any,
    message_id: uuid.UUID,
    idempotency_key: str | None,
    digest: str | None,
) -> tuple[AcceptedRow, PendingSend]:
    """What to answer with, and the row (with its timeline entry) for a batch."""
    now = utcnow()
    values: dict[str, Any] = {
        "id": str(message_id),
        "session_id": session.id,
        "api_key_id": principal.key.id,
        "direction": "out",
        "kind": body.type,
        "chat": body.to,
        "payload": command.payload.model_dump(mode="json"),
        "status": "queued",
        "wa_id": wa_message_id(message_id),
        "trace_id": command.trace_id,
        "idempotency_key": idempotency_key,
        "request_hash": digest,
        "created_at": now,
        "updated_at": now,
    }
    status = {
        "id": new_id(),
        "message_id": values["id"],
        "status": "queued",
        "at": now,
        "trace_id": command.trace_id,
        "detail": None,
    }
    pending = PendingSend(
        message=values,
        status=status,
        stream=commands.stream_for(command, upstream=session.upstream),
        data=command.model_dump_json(),
        idempotent=idempotency_key is not None,
    )
    answer = AcceptedRow(
        id=values["id"], wa_id=values["wa_id"], created_at=now, trace_id=command.trace_id
    )
    return answer, pending


# --- reading -------------------------------------------------------------------------


async def get_visible(
    reader: async_sessionmaker[AsyncSession], principal: Principal, message_id: str
) -> tuple[Message, Session, list[MessageStatusEvent]]:
    """The message, its session and its timeline, if the caller may see the session."""
    async with reader() as db:
        found = (
            await db.execute(
                sa.select(Message, Session)
                .join(Session, col(Session.id) == col(Message.session_id))
                .where(col(Message.id) == message_id)
            )
        ).first()
        if found is None or not principal.can_see(found[1].owner_key_id):
            raise NotFound(f"no message {message_id}", details={"messageId": message_id})
        timeline = (
            await db.scalars(
                sa.select(MessageStatusEvent)
                .where(col(MessageStatusEvent.message_id) == message_id)
                .order_by(col(MessageStatusEvent.at), col(MessageStatusEvent.id))
            )
        ).all()
    return found[0], found[1], list(timeline)


def encode_cursor(row: Message) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, row_id = raw.partition("|")
        when = datetime.fromisoformat(at)
        if when.utcoffset() is None or not row_id:
            raise ValueError(raw)
    except ValueError as exc:
        raise ValidationFailed(
            "cursor is not one this api gave out",
            details={"fields": [{"field": "query.cursor", "message": "invalid cursor"}]},
        ) from exc
    return when, row_id


async def list_for_session(
    reader: async_sessionmaker[AsyncSession],
    session: Session,
    *,
    direction: Literal["in", "out"] | None = None,
    status: str | None = None,
    since: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Message], str | None]:
    """Newest first, `limit` per page; the next page starts after the returned cursor."""
    query = sa.select(Message).where(col(Message.session_id) == session.id)
    if direction is not None:
        query = query.where(col(Message.direction) == direction)
    if status is not None:
        query = query.where(col(Message.status) == status)
    if since is not None:
        if since.utcoffset() is None:
            since = since.replace(tzinfo=UTC)
        query = query.where(col(Message.created_at) >= since)
    if cursor is not None:
        at, row_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                col(Message.created_at) < at,
                sa.and_(col(Message.created_at) == at, col(Message.id) < row_id),
            )
        )
    query = query.order_by(col(Message.created_at).desc(), col(Message.id).desc()).limit(limit + 1)
    async with reader() as db:
        rows = list((await db.scalars(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]) if more and rows else None


# --- engine requests without a message row --------------------------------------------


async def mark_read(
    reader: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
    session: Session,
    message_ids: list[uuid.UUID],
) -> int:
    sessions.require_connected(session)
    rows = await _messages_in_session(
        reader, session.id, message_ids, "body.messageIds", direction="in"
    )
    await commands.send(
        redis,
        "mark_read",
        session=session.name,
        upstream=session.upstream,
        payload={"messages": [message_ref(r).model_dump(mode="json") for r in rows]},
    )
    return len(rows)


async def presence(
    redis: aioredis.Redis, session: Session, *, state: str, chat: str | None
) -> None:
    sessions.require_connected(session)
    await commands.send(
        redis,
        "presence",
        session=session.name,
        upstream=session.upstream,
        payload={"state": state, "chat": chat},
    )
