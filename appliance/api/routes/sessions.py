"""`/v1/sessions`: WhatsApp numbers, their pairing and their lifecycle. Services do the work."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Annotated, Any, Literal

import segno
from fastapi import APIRouter, Path, Query, Response, status
from pydantic import Field

from appliance.api.auth import PrincipalDep
from appliance.api.schemas import ApiModel, ErrorResponse
from appliance.api.state import StateDep
from appliance.contracts import (
    MAX_DAILY_CAP,
    MAX_INTERVAL_S,
    PacingOverrides,
    SessionState,
    Upstream,
)
from appliance.db.models import Session
from appliance.phones import Phone
from appliance.services import sandbox, session_create, session_liveness, sessions

_ERR = {"model": ErrorResponse}
router = APIRouter(
    prefix="/v1/sessions",
    tags=["sessions"],
    responses={401: _ERR, 404: _ERR, 422: _ERR, 429: _ERR},
)

SessionRef = Annotated[str, Path(description="The session's id or its name", examples=["sales-1"])]


class PacingIn(ApiModel):
    enabled: bool | None = Field(default=None, examples=[True])
    min_interval_s: float | None = Field(default=None, ge=0, le=MAX_INTERVAL_S, examples=[5.0])
    max_interval_s: float | None = Field(default=None, ge=0, le=MAX_INTERVAL_S, examples=[10.0])
    daily_cap: int | None = Field(default=None, ge=1, le=MAX_DAILY_CAP, examples=[500])


class SessionCreate(ApiModel):
    name: str = Field(
        min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$", examples=["sales-1"]
    )
    upstream: Upstream = Field(
        default="whatsapp",
        description="`sandbox` (the bundled simulator) only when `[sandbox] enabled`",
    )
    pacing: PacingIn | None = None
    push_name: str | None = Field(default=None, max_length=64, examples=["Acme Sales"])
    phone: Phone | None = Field(
        default=None,
        description="The number to pair by code; in the sandbox, the simulated phone that "
        "scans the QR, so the session pairs itself",
    )


class SessionPublic(ApiModel):
    id: str
    name: str = Field(examples=["sales-1"])
    upstream: Upstream
    state: SessionState = Field(examples=["connected"])
    state_reason: str | None = None
    state_changed_at: datetime
    active: bool = Field(description="whether the engine should run it")
    phone: str | None = None
    push_name: str | None = None
    pacing: dict[str, Any] | None = None
    me_jid: str | None = Field(default=None, examples=["4915112345678@s.whatsapp.net"])
    paired_at: datetime | None = None
    created_at: datetime

    @classmethod
    def of(cls, row: Session) -> SessionPublic:
        return cls(
            id=row.id,
            name=row.public_name,
            upstream=row.upstream,
            state=row.state,
            state_reason=row.state_reason,
            state_changed_at=row.state_changed_at,
            active=row.active,
            phone=row.phone,
            push_name=row.push_name,
            pacing=row.pacing,
            me_jid=row.me_jid,
            paired_at=row.paired_at,
            created_at=row.created_at,
        )


class SessionList(ApiModel):
    items: list[SessionPublic]


class QrPublic(ApiModel):
    qr: str = Field(
        description="The raw QR string, to render yourself",
        examples=["https://wa.me/settings/linked_devices#2@abc,def,ghi,jkl,1"],
    )
    expires_at: datetime | None


class PairingCodeRequest(ApiModel):
    phone: Phone


class PairingCodePublic(ApiModel):
    code: str = Field(examples=["ABCD1234"])
    expires_at: datetime | None


class MePublic(ApiModel):
    jid: str = Field(examples=["4915112345678@s.whatsapp.net"])
    lid: str | None = Field(default=None, examples=["123456789012345@lid"])
    push_name: str | None = None
    paired_at: datetime | None = None


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a session and start it",
    responses={
        409: {
            "model": ErrorResponse,
            "description": "name taken by this key (`SESSION_EXISTS`), the key's quota "
            "(`SESSION_QUOTA_EXCEEDED`), the appliance's maximum (`TOO_MANY_SESSIONS`) or "
            "the engine's memory budget (`ENGINE_MEMORY_FULL`)",
        }
    },
)
async def create_session(
    body: SessionCreate, state: StateDep, principal: PrincipalDep
) -> SessionPublic:
    row = await session_create.create_named(
        writer=state.writer,
        reader=state.reader,
        redis=state.redis,
        settings=state.settings,
        principal=principal,
        name=body.name,
        upstream=body.upstream,
        pacing=PacingOverrides(**body.pacing.model_dump(by_alias=False)) if body.pacing else None,
        push_name=body.push_name,
        phone=body.phone,
    )
    return SessionPublic.of(row)


@router.get("", summary="List sessions (a tenant sees its own)")
async def list_sessions(state: StateDep, principal: PrincipalDep) -> SessionList:
    rows = await session_liveness.seen_by_engine(
        state.redis, await sessions.list_visible(state.reader, principal)
    )
    return SessionList(items=[SessionPublic.of(r) for r in rows])


@router.get("/{session}", summary="One session")
async def get_session(
    session: SessionRef, state: StateDep, principal: PrincipalDep
) -> SessionPublic:
    row = await sessions.get(state.reader, principal, session)
    [seen] = await session_liveness.seen_by_engine(state.redis, [row])
    return SessionPublic.of(seen)


@router.delete(
    "/{session}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Log the number out and delete the session with its messages",
)
async def delete_session(session: SessionRef, state: StateDep, principal: PrincipalDep) -> Response:
    row = await sessions.get(state.reader, principal, session)
    await sessions.delete(state.writer, state.redis, row)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _act(
    session: str, state: StateDep, principal: PrincipalDep, action: sessions.Action
) -> SessionPublic:
    row = await sessions.get(state.reader, principal, session)
    acted = await sessions.act(
        state.writer, state.redis, row, action, settings=state.settings, reader=state.reader
    )
    return SessionPublic.of(acted)


_FULL: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "`ENGINE_MEMORY_FULL`"}
}


@router.post(
    "/{session}/start",
    status_code=202,
    summary="Start (or resume) the session",
    responses=_FULL,
)
async def start_session(
    session: SessionRef, state: StateDep, principal: PrincipalDep
) -> SessionPublic:
    return await _act(session, state, principal, "start")


@router.post("/{session}/stop", status_code=202, summary="Stop the session (stays paired)")
async def stop_session(
    session: SessionRef, state: StateDep, principal: PrincipalDep
) -> SessionPublic:
    return await _act(session, state, principal, "stop")


@router.post(
    "/{session}/restart", status_code=202, summary="Reconnect the session", responses=_FULL
)
async def restart_session(
    session: SessionRef, state: StateDep, principal: PrincipalDep
) -> SessionPublic:
    return await _act(session, state, principal, "restart")


@router.post("/{session}/logout", status_code=202, summary="Unlink the number; keeps the row")
async def logout_session(
    session: SessionRef, state: StateDep, principal: PrincipalDep
) -> SessionPublic:
    return await _act(session, state, principal, "logout")


@router.get(
    "/{session}/qr",
    summary="The current QR: JSON, or an image with `?format=png|svg`",
    responses={
        200: {
            "content": {"image/png": {}, "image/svg+xml": {}},
            "description": "JSON `{qr, expiresAt}`, or the rendered image",
        },
        404: {"model": ErrorResponse, "description": "`NO_QR`: none at the moment"},
        409: {"model": ErrorResponse, "description": "`SESSION_ALREADY_CONNECTED`"},
    },
)
async def get_qr(
    session: SessionRef,
    state: StateDep,
    principal: PrincipalDep,
    format: Annotated[Literal["json", "png", "svg"], Query()] = "json",
) -> Any:
    row = await sessions.get(state.reader, principal, session)
    qr = await sessions.current_qr(state.redis, row)
    if format == "json":
        return QrPublic(qr=qr.value, expires_at=qr.expires_at)
    buffer = io.BytesIO()
    # Error level L keeps the long wa.me string scannable at a small size.
    segno.make(qr.value, error="l").save(buffer, kind=format, scale=6, border=2)
    media_type = "image/png" if format == "png" else "image/svg+xml"
    return Response(buffer.getvalue(), media_type=media_type, headers={"Cache-Control": "no-store"})


@router.post(
    "/{session}/pairing-code",
    status_code=202,
    summary="Pair by code: the code appears at GET .../pairing-code",
    responses={409: {"model": ErrorResponse, "description": "`SESSION_ALREADY_CONNECTED`"}},
)
async def request_pairing_code(
    session: SessionRef, body: PairingCodeRequest, state: StateDep, principal: PrincipalDep
) -> SessionPublic:
    row = await sessions.get(state.reader, principal, session)
    if row.upstream == "sandbox":
        await sandbox.claim_number(state.writer, principal, body.phone)
    row = await sessions.request_pairing_code(state.writer, state.redis, row, body.phone)
    return SessionPublic.of(row)


@router.get(
    "/{session}/pairing-code",
    summary="The current pairing code, to enter on the phone",
    responses={404: {"model": ErrorResponse, "description": "`NO_PAIRING_CODE`"}},
)
async def get_pairing_code(
    session: SessionRef, state: StateDep, principal: PrincipalDep
) -> PairingCodePublic:
    row = await sessions.get(state.reader, principal, session)
    found = await sessions.current_pairing_code(state.redis, row)
    return PairingCodePublic(code=found.value, expires_at=found.expires_at)


@router.get(
    "/{session}/me",
    summary="The paired account",
    responses={409: {"model": ErrorResponse, "description": "`SESSION_NOT_PAIRED`"}},
)
async def get_me(session: SessionRef, state: StateDep, principal: PrincipalDep) -> MePublic:
    row = sessions.me(await sessions.get(state.reader, principal, session))
    assert row.me_jid is not None  # sessions.me refuses an unpaired session
    return MePublic(
        jid=row.me_jid, lid=row.me_lid, push_name=row.me_push_name, paired_at=row.paired_at
    )
