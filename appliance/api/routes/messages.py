"""Messages: send (JSON or multipart), read one with its timeline, list, and the
engine requests that carry no message (number checks, read receipts, presence)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from appliance.api.auth import PrincipalDep
from appliance.api.schemas import ApiModel, ErrorResponse, IsoDatetime
from appliance.api.state import StateDep
from appliance.contracts import MessageStatus
from appliance.db.models import Message, MessageStatusEvent, Session
from appliance.errors import BadRequest, ValidationFailed
from appliance.phones import Phone, Recipient
from appliance.services import messages, numbers, outgoing, sessions
from appliance.services.media import MediaTooLarge
from appliance.webhooks.outbox import camel_keys

_ERR = {"model": ErrorResponse}
router = APIRouter(prefix="/v1", tags=["messages"], responses={401: _ERR, 404: _ERR, 422: _ERR})

SessionRef = Annotated[str, Path(description="The session's id or its name", examples=["sales-1"])]
BODY: TypeAdapter[Any] = TypeAdapter(outgoing.OutgoingMessage)
_UPLOAD_CHUNK = 64 * 1024
# Multipart overhead (boundaries, the `message` part) allowed above the media limit.
_MULTIPART_SLACK = 256 * 1024


class MessageAccepted(ApiModel):
    id: str = Field(examples=["8a3c1f2e-5b7d-4e9a-9c1b-2d3e4f5a6b7c"])
    status: Literal["queued"] = "queued"
    session: str = Field(examples=["sales-1"])
    wa_id: str = Field(examples=["3EB0A1B2C3D4E5F6A7B8C9"])
    created_at: datetime
    trace_id: str | None


class StatusEntry(ApiModel):
    status: MessageStatus
    at: datetime
    trace_id: str | None
    detail: dict[str, Any] | None

    @classmethod
    def of(cls, row: MessageStatusEvent) -> StatusEntry:
        return cls(status=row.status, at=row.at, trace_id=row.trace_id, detail=row.detail)


class MessagePublic(ApiModel):
    id: str
    session_id: str
    direction: Literal["out", "in"]
    kind: str = Field(examples=["text"])
    chat: str = Field(
        description="The chat's JID, the same in both directions: `<digits>@s.whatsapp.net` "
        "for a number, `...@g.us` for a group",
        examples=["4915112345678@s.whatsapp.net"],
    )
    status: str = Field(examples=["delivered"])
    wa_id: str | None
    sender_pn: str | None = Field(
        default=None,
        description="Inbound: the sender's number as a JID (never a device's)",
        examples=["4915112345678@s.whatsapp.net"],
    )
    sender_lid: str | None = None
    content: dict[str, Any] = Field(description="The message body as sent or received")
    sent_at: datetime | None
    error_code: str | None = None
    error_reason: str | None = None
    trace_id: str | None
    created_at: datetime
    updated_at: datetime
    timeline: list[StatusEntry] | None = Field(
        default=None, description="Each status transition (outbound; in GET /messages/{id})"
    )

    @classmethod
    def of(cls, row: Message, timeline: list[MessageStatusEvent] | None = None) -> MessagePublic:
        return cls(
            id=row.id,
            session_id=row.session_id,
            direction=row.direction,
            kind=row.kind,
            chat=row.chat,
            status=row.status,
            wa_id=row.wa_id,
            sender_pn=row.sender_pn,
            sender_lid=row.sender_lid,
            # The blob's path is the engine's business, not the client's.
            content=camel_keys({k: v for k, v in row.payload.items() if k != "blob_path"}),
            sent_at=row.sent_at,
            error_code=row.error_code,
            error_reason=row.error_reason,
            trace_id=row.trace_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            timeline=[StatusEntry.of(e) for e in timeline] if timeline is not None else None,
        )


class MessagePage(ApiModel):
    items: list[MessagePublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )


class CheckNumbersRequest(ApiModel):
    phones: list[Phone] = Field(
        min_length=1,
        max_length=50,
        description="Answered as digits only, in the order given",
        examples=[["+49 151 12345678", "4915199999999"]],
    )


class NumberResult(ApiModel):
    phone: str
    exists: bool
    jid: str | None
    lid: str | None


class CheckNumbersResult(ApiModel):
    results: list[NumberResult]


class ReadRequest(ApiModel):
    message_ids: list[uuid.UUID] = Field(
        min_length=1, max_length=256, description="Received messages (ours ids) to mark read"
    )


class PresenceRequest(ApiModel):
    state: Literal["available", "unavailable", "composing", "recording", "paused"]
    chat: Recipient | None = Field(
        default=None,
        description="Typing indicators are per chat; available/unavailable are global",
        examples=["4915112345678@s.whatsapp.net"],
    )


class Queued(ApiModel):
    queued: int = Field(description="How many items the engine was asked to handle")


def accepted_body(row: Message | messages.AcceptedRow, session: Session) -> MessageAccepted:
    assert row.wa_id is not None  # outbound rows get their WhatsApp id at creation
    return MessageAccepted(
        id=row.id,
        session=session.public_name,
        wa_id=row.wa_id,
        created_at=row.created_at,
        trace_id=row.trace_id,
    )


def accepted_json(row: Message | messages.AcceptedRow, session: Session) -> bytes:
    """`accepted_body(row, session)` as JSON, byte for byte, without building the model
    (the fast path's answer; a test holds the two equal)."""
    return orjson.dumps(
        {
            "id": row.id,
            "status": "queued",
            "session": session.public_name,
            "waId": row.wa_id,
            "createdAt": row.created_at,
            "traceId": row.trace_id,
        },
        option=orjson.OPT_UTC_Z,
    )


class InvalidMultipart(BadRequest):
    """A multipart body the parser cannot read (no boundary, broken part headers, too
    many parts): 400, unlike a readable body whose JSON part is invalid (422)."""

    code = "INVALID_MULTIPART"


def body_error(exc: ValidationError, prefix: str) -> RequestValidationError:
    return RequestValidationError(
        [{**e, "loc": (prefix, *e["loc"])} for e in exc.errors(include_url=False)]
    )


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_UPLOAD_CHUNK):
        yield chunk


@asynccontextmanager
async def _parsed(
    request: Request, max_bytes: int
) -> AsyncIterator[tuple[Any, messages.Upload | None]]:
    """A multipart send's body and upload; the upload's spooled file is closed on exit.
    Only multipart sends reach the route: a JSON one is answered at the router's entry
    (appliance/api/fast_send.py)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + _MULTIPART_SLACK:
        raise MediaTooLarge(f"media larger than {max_bytes} bytes", details={"maxBytes": max_bytes})
    try:
        # Two files at most: the upload, and the JSON part when a client sends it as a
        # file. Parsed here, at once, so a broken body is a 400 of its own.
        form = await request.form(max_files=2, max_fields=4)
    except (MultiPartException, StarletteHTTPException) as exc:
        # Starlette turns its parser's error into a bare HTTP 400 inside an app.
        reason = exc.message if isinstance(exc, MultiPartException) else str(exc.detail)
        raise InvalidMultipart(
            f"unreadable multipart body: {reason}",
            details={
                "reason": reason,
                "expected": "multipart/form-data with a boundary, a `message` part "
                "(the JSON body) and a `file` part",
            },
        ) from exc
    try:
        raw = form.get("message")
        file = form.get("file")
        if isinstance(raw, UploadFile):
            # Some clients send the JSON part as a file (Content-Type: application/json).
            raw = (await raw.read(_MULTIPART_SLACK)).decode("utf-8", errors="replace")
        if not isinstance(raw, str):
            raise ValidationFailed(
                "multipart needs a `message` part (the JSON body) and a `file` part",
                details={"fields": [{"field": "message", "message": "required"}]},
            )
        try:
            body = BODY.validate_json(raw)
        except ValidationError as exc:
            raise body_error(exc, "message") from exc
        upload = None
        if isinstance(file, UploadFile):
            upload = messages.Upload(
                filename=file.filename, content_type=file.content_type, chunks=_chunks(file)
            )
        yield body, upload
    finally:
        # The upload's spooled file.
        await form.close()


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """The schema with its `$defs` references inlined (the body is not a FastAPI model,
    so its definitions are not among the document's components)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        inlined = {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
        if isinstance(inlined.get("discriminator"), dict):
            # Its mapping names `$defs` entries, which no longer exist once inlined.
            inlined["discriminator"] = {"propertyName": inlined["discriminator"]["propertyName"]}
        return inlined
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


_BODY_SCHEMA = BODY.json_schema(by_alias=True)
_SEND_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": _inline(_BODY_SCHEMA, _BODY_SCHEMA.get("$defs", {})),
                "examples": outgoing.EXAMPLES,
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["message", "file"],
                    "properties": {
                        "message": {
                            "type": "string",
                            "description": "The JSON body as for application/json, "
                            "without media.url",
                        },
                        "file": {"type": "string", "format": "binary"},
                    },
                },
            },
        },
    },
    "parameters": [],
}


@router.post(
    "/sessions/{session}/messages",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageAccepted,
    summary="Send a message (text, media, location, contact, reaction; replies and mentions)",
    openapi_extra=_SEND_OPENAPI,
    responses={
        400: {
            "model": ErrorResponse,
            "description": "`INVALID_MULTIPART`: a multipart body that cannot be parsed",
        },
        409: {"model": ErrorResponse, "description": "`SESSION_NOT_CONNECTED`"},
        413: {"model": ErrorResponse, "description": "`MEDIA_TOO_LARGE`"},
        415: {"model": ErrorResponse, "description": "`MEDIA_TYPE_NOT_ALLOWED`"},
        422: {
            "model": ErrorResponse,
            "description": "invalid body, `IDEMPOTENCY_KEY_REUSED` (same key, other body), "
            "`MEDIA_URL_REFUSED` (a private address), `MEDIA_FETCH_FAILED`, `UNKNOWN_MESSAGE`",
        },
        429: {
            "model": ErrorResponse,
            "description": "`MESSAGE_QUOTA_EXCEEDED`, with `Retry-After` (seconds to UTC midnight)",
        },
        503: {
            "model": ErrorResponse,
            "description": "`ENQUEUE_FAILED`: stored (`details.messageId` is real) but Redis "
            "refused the command; it is enqueued once Redis is back, and a retry with the same "
            "Idempotency-Key answers 202 with that id. `REDIS_UNAVAILABLE`: nothing stored. "
            "Both retryable, with `Retry-After`",
        },
    },
)
async def send_message(
    session: SessionRef,
    request: Request,
    state: StateDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="A retry with the same key and body returns the first answer",
        ),
    ] = None,
) -> Response:
    row = await sessions.get_cached(state.reader, principal, session)
    async with _parsed(request, state.settings.media.max_bytes) as (body, upload):
        accepted = await messages.send(
            writer=state.writer,
            reader=state.reader,
            redis=state.redis,
            settings=state.settings,
            principal=principal,
            session=row,
            body=body,
            upload=upload,
            idempotency_key=idempotency_key,
            batcher=state.sends,
        )
    # Serialised here, once, rather than validated again by FastAPI's response model.
    return Response(
        accepted_body(accepted.message, row).model_dump_json(by_alias=True),
        status_code=status.HTTP_202_ACCEPTED,
        media_type="application/json",
    )


@router.get("/messages/{message_id}", summary="A message with its status timeline")
async def get_message(message_id: str, state: StateDep, principal: PrincipalDep) -> MessagePublic:
    row, _, timeline = await messages.get_visible(state.reader, principal, message_id)
    return MessagePublic.of(row, timeline)


@router.get("/sessions/{session}/messages", summary="A session's messages, newest first")
async def list_messages(
    session: SessionRef,
    state: StateDep,
    principal: PrincipalDep,
    direction: Literal["in", "out"] | None = None,
    status: Literal["queued", "sending", "sent", "delivered", "read", "failed", "received"]
    | None = None,
    since: Annotated[
        IsoDatetime | None,
        Query(description="Only messages created at or after (ISO 8601; no offset: UTC)"),
    ] = None,
    cursor: Annotated[str | None, Query(description="`nextCursor` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> MessagePage:
    row = await sessions.get(state.reader, principal, session)
    rows, next_cursor = await messages.list_for_session(
        state.reader,
        row,
        direction=direction,
        status=status,
        since=since,
        cursor=cursor,
        limit=limit,
    )
    return MessagePage(items=[MessagePublic.of(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "/sessions/{session}/check-numbers",
    summary="Which numbers are on WhatsApp (paced; waits for the engine)",
    responses={
        409: {"model": ErrorResponse, "description": "`SESSION_NOT_CONNECTED`"},
        502: {"model": ErrorResponse, "description": "`ENGINE_REQUEST_FAILED`"},
        503: {"model": ErrorResponse, "description": "`ENGINE_UNAVAILABLE`: no heartbeat"},
        504: {"model": ErrorResponse, "description": "`ENGINE_TIMEOUT`"},
    },
)
async def check_numbers(
    session: SessionRef, body: CheckNumbersRequest, state: StateDep, principal: PrincipalDep
) -> CheckNumbersResult:
    row = await sessions.get(state.reader, principal, session)
    results = await numbers.check(state.redis, state.settings, row, body.phones)
    return CheckNumbersResult(
        results=[
            NumberResult(phone=r.phone, exists=r.exists, jid=r.jid, lid=r.lid) for r in results
        ]
    )


@router.post(
    "/sessions/{session}/read",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send read receipts for received messages",
    responses={409: {"model": ErrorResponse, "description": "`SESSION_NOT_CONNECTED`"}},
)
async def mark_read(
    session: SessionRef, body: ReadRequest, state: StateDep, principal: PrincipalDep
) -> Queued:
    row = await sessions.get(state.reader, principal, session)
    return Queued(queued=await messages.mark_read(state.reader, state.redis, row, body.message_ids))


@router.post(
    "/sessions/{session}/presence",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Set presence (online, typing, recording)",
    responses={409: {"model": ErrorResponse, "description": "`SESSION_NOT_CONNECTED`"}},
)
async def set_presence(
    session: SessionRef, body: PresenceRequest, state: StateDep, principal: PrincipalDep
) -> Queued:
    row = await sessions.get(state.reader, principal, session)
    await messages.presence(state.redis, row, state=body.state, chat=body.chat)
    return Queued(queued=1)
