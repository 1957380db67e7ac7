"""`/v1/keys`: API keys (admin only). The secret is in the creation answer, never again."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, status
from pydantic import Field

from appliance.api.auth import AdminDep, PrincipalDep
from appliance.api.schemas import (
    MAX_MESSAGES_PER_DAY,
    MAX_SESSIONS_PER_KEY,
    ApiModel,
    ErrorResponse,
)
from appliance.api.state import StateDep
from appliance.auth import api_keys
from appliance.db.models import ApiKey

router = APIRouter(
    prefix="/v1",
    tags=["keys"],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        429: {"model": ErrorResponse},
    },
)


class KeyCreate(ApiModel):
    name: str = Field(min_length=1, max_length=128, examples=["shop-backend"])
    role: Literal["admin", "tenant"] = "tenant"
    max_sessions: int | None = Field(default=None, ge=1, le=MAX_SESSIONS_PER_KEY, examples=[5])
    messages_per_day: int | None = Field(
        default=None, ge=1, le=MAX_MESSAGES_PER_DAY, examples=[2000]
    )


class KeyQuotas(ApiModel):
    max_sessions: int | None = Field(default=None, ge=1, le=MAX_SESSIONS_PER_KEY)
    messages_per_day: int | None = Field(default=None, ge=1, le=MAX_MESSAGES_PER_DAY)


class KeyPublic(ApiModel):
    id: str
    name: str
    role: Literal["admin", "tenant"]
    max_sessions: int | None
    messages_per_day: int | None
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyPublic:
        return cls(
            id=key.id,
            name=key.name,
            role=key.role,
            max_sessions=key.max_sessions,
            messages_per_day=key.messages_per_day,
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyPublic):
    key: str = Field(description="`wapp_<id>_<secret>`: shown only in this answer")


class KeyList(ApiModel):
    items: list[KeyPublic]


@router.post("/keys", status_code=status.HTTP_201_CREATED, summary="Create an API key")
async def create_key(body: KeyCreate, state: StateDep, _: AdminDep) -> KeyCreated:
    created = await api_keys.create_api_key(
        state.writer,
        name=body.name,
        role=body.role,
        max_sessions=body.max_sessions,
        messages_per_day=body.messages_per_day,
    )
    return KeyCreated(**KeyPublic.of(created.key).model_dump(), key=created.plaintext)


@router.get("/keys", summary="List API keys (never their secrets)")
async def list_keys(state: StateDep, _: AdminDep, include_revoked: bool = False) -> KeyList:
    keys = await api_keys.list_api_keys(state.reader, include_revoked=include_revoked)
    return KeyList(items=[KeyPublic.of(k) for k in keys])


@router.get("/keys/me", summary="The calling key")
async def my_key(principal: PrincipalDep) -> KeyPublic:
    return KeyPublic.of(principal.key)


@router.get("/keys/{key_id}", summary="One API key", responses={404: {"model": ErrorResponse}})
async def get_key(key_id: str, state: StateDep, _: AdminDep) -> KeyPublic:
    return KeyPublic.of(await api_keys.get_api_key(state.reader, key_id))


@router.put(
    "/keys/{key_id}/quotas",
    summary="Set a key's quotas (null: unlimited)",
    responses={404: {"model": ErrorResponse}},
)
async def set_quotas(key_id: str, body: KeyQuotas, state: StateDep, _: AdminDep) -> KeyPublic:
    key = await api_keys.set_quotas(
        state.writer,
        key_id,
        max_sessions=body.max_sessions,
        messages_per_day=body.messages_per_day,
    )
    return KeyPublic.of(key)


@router.delete(
    "/keys/{key_id}", summary="Revoke an API key", responses={404: {"model": ErrorResponse}}
)
async def revoke_key(key_id: str, state: StateDep, _: AdminDep) -> KeyPublic:
    return KeyPublic.of(await api_keys.revoke_api_key(state.writer, key_id))
