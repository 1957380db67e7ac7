"""`/v1/sandbox`: simulated contacts write to sandbox sessions and show what they got.

Only when `[sandbox] enabled`; otherwise every route answers 404.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, status
from pydantic import Field, field_validator, model_validator

from appliance.api.auth import PrincipalDep
from appliance.api.schemas import ApiModel, ErrorResponse
from appliance.api.state import StateDep
from appliance.phones import Phone
from appliance.services import sandbox

_ERR = {"model": ErrorResponse}
router = APIRouter(
    prefix="/v1/sandbox",
    tags=["sandbox"],
    responses={
        401: _ERR,
        404: {
            "model": ErrorResponse,
            "description": "sandbox disabled, no such session, or another key's number",
        },
        422: _ERR,
        503: {"model": ErrorResponse, "description": "`SANDBOX_UNAVAILABLE`: simulator down"},
    },
)

ContactPhone = Annotated[
    Phone,
    Path(description="The simulated contact's number", examples=["15550100"]),
]


class SandboxMedia(ApiModel):
    kind: Literal["image", "video", "audio", "document", "sticker"]
    data_base64: str = Field(min_length=1, description="The file, base64")
    mimetype: str = Field(min_length=3, max_length=255, examples=["image/png"])
    caption: str | None = Field(default=None, max_length=4096)
    file_name: str | None = Field(default=None, max_length=255)

    @field_validator("data_base64")
    @classmethod
    def _is_base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError("not base64") from exc
        return value


class ContactMessage(ApiModel):
    session: str | None = Field(
        default=None, description="The sandbox session's id or name", examples=["demo"]
    )
    to: Phone | None = Field(
        default=None,
        description="Or the session's own phone number",
        examples=["15550001"],
    )
    push_name: str | None = Field(default=None, max_length=64, examples=["Alice"])
    text: str | None = Field(default=None, min_length=1, max_length=65536, examples=["Hi there"])
    media: SandboxMedia | None = None

    @model_validator(mode="after")
    def _one_each(self) -> ContactMessage:
        if (self.session is None) == (self.to is None):
            raise ValueError("give exactly one of session and to")
        if (self.text is None) == (self.media is None):
            raise ValueError("give exactly one of text and media")
        return self


class ContactSent(ApiModel):
    session: str = Field(examples=["demo"])
    message: dict[str, Any] = Field(
        description="The simulator's record: id, to, at, text or media {kind, size, sha256}",
        examples=[{"id": "3EB0ABC", "to": "15550001", "at": "2026-11-25T10:00:00Z", "text": "Hi"}],
    )


class ContactReceived(ApiModel):
    items: list[dict[str, Any]] = Field(
        description="Decrypted: id, from, fromLid, at, text or media {kind, mimetype, size, ...}",
        examples=[[{"id": "3EB0F00", "from": "15550001@s.whatsapp.net", "text": "Hello"}]],
    )


class ContactSettings(ApiModel):
    push_name: str | None = Field(default=None, max_length=64, examples=["Carol"])
    delivery_delay_ms: int | None = Field(
        default=None, ge=0, le=600_000, description="Delay of the delivery receipt (default 0)"
    )
    read_delay_ms: int | None = Field(
        default=1000, ge=0, le=600_000, description="Delay of the read receipt; null: never reads"
    )


class ContactPublic(ApiModel):
    phone: str = Field(examples=["15559000"])
    jid: str = Field(examples=["15559000@s.whatsapp.net"])
    lid: str = Field(examples=["100000000000001@lid"])
    push_name: str | None = None
    delivery_delay_ms: int
    read_delay_ms: int | None


@router.put(
    "/contacts/{phone}",
    summary="Create a simulated contact, or set when it sends delivery and read receipts",
)
async def put_contact(
    phone: ContactPhone, body: ContactSettings, state: StateDep, principal: PrincipalDep
) -> ContactPublic:
    sandbox.require_enabled(state.settings)
    await sandbox.claim_number(state.writer, principal, phone)
    contact = await sandbox.configure_contact(
        state.settings,
        contact=phone,
        push_name=body.push_name,
        delivery_delay_ms=body.delivery_delay_ms,
        read_delay_ms=body.read_delay_ms,
        reads="read_delay_ms" not in body.model_fields_set or body.read_delay_ms is not None,
    )
    return ContactPublic(
        phone=contact["phone"],
        jid=contact["jid"],
        lid=contact["lid"],
        push_name=contact.get("pushName"),
        delivery_delay_ms=contact["deliveryDelayMs"],
        read_delay_ms=contact["readDelayMs"],
    )


@router.post(
    "/contacts/{phone}/messages",
    status_code=status.HTTP_201_CREATED,
    summary="A simulated contact sends a message to a sandbox session",
    responses={
        409: {"model": ErrorResponse, "description": "not a sandbox session, or not paired"},
        413: {"model": ErrorResponse, "description": "`MEDIA_TOO_LARGE`"},
    },
)
async def contact_sends(
    phone: ContactPhone, body: ContactMessage, state: StateDep, principal: PrincipalDep
) -> ContactSent:
    sandbox.require_enabled(state.settings)
    row, to_phone = await sandbox.target(state.reader, principal, session=body.session, to=body.to)
    await sandbox.claim_number(state.writer, principal, phone)
    media = None
    if body.media is not None:
        sandbox.check_media_size(body.media.data_base64, state.settings)
        media = body.media.model_dump(exclude_none=True)
    sent = await sandbox.send_from_contact(
        state.settings,
        contact=phone,
        to_phone=to_phone,
        push_name=body.push_name,
        text=body.text,
        media=media,
    )
    return ContactSent(session=row.public_name, message=sent)


@router.get(
    "/contacts/{phone}/messages",
    summary="What a simulated contact received (a tenant: from its own sessions)",
)
async def contact_received(
    phone: ContactPhone, state: StateDep, principal: PrincipalDep
) -> ContactReceived:
    sandbox.require_enabled(state.settings)
    await sandbox.require_number(state.reader, principal, phone)
    items = await sandbox.received_by_contact(state.reader, state.settings, principal, phone)
    return ContactReceived(items=items)
