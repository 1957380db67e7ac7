"""API keys: `wapp_<id>_<secret>`, stored as a SHA-256 of the secret, shown once.

The secret is 32 random bytes, so a fast hash is enough (nothing to brute-force); the
comparison is constant-time. Roles: `admin` (everything) and `tenant` (its own things).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance.auth import key_cache
from appliance.db.models import ApiKey, ApiKeyRole
from appliance.db.types import new_id, utcnow
from appliance.errors import NotFound, Unauthorized

PREFIX = "wapp_"


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    plaintext: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(presented: str) -> tuple[str, str]:
    """`wapp_<id>_<secret>` -> (id, secret); the id never holds `_`, the secret may."""
    if not presented.startswith(PREFIX):
        raise Unauthorized("malformed API key")
    key_id, sep, secret = presented[len(PREFIX) :].partition("_")
    if not sep or not key_id or not secret:
        raise Unauthorized("malformed API key")
    return key_id, secret


async def create_api_key(
    sessions: async_sessionmaker[AsyncSession],
    *,
    name: str,
    role: ApiKeyRole,
    max_sessions: int | None = None,
    messages_per_day: int | None = None,
) -> CreatedKey:
    key_id = new_id()
    secret = secrets.token_urlsafe(32)
    row = ApiKey(
        id=key_id,
        secret_hash=_hash(secret),
        name=name,
        role=role,
        max_sessions=max_sessions,
        messages_per_day=messages_per_day,
    )
    async with sessions() as db, db.begin():
        db.add(row)
    return CreatedKey(key=row, plaintext=f"{PREFIX}{key_id}_{secret}")


async def list_api_keys(
    sessions: async_sessionmaker[AsyncSession], *, include_revoked: bool = False
) -> list[ApiKey]:
    query = sa.select(ApiKey).order_by(col(ApiKey.created_at), col(ApiKey.id))
    if not include_revoked:
        query = query.where(col(ApiKey.revoked_at).is_(None))
    async with sessions() as db:
        return list((await db.scalars(query)).all())


async def get_api_key(sessions: async_sessionmaker[AsyncSession], key_id: str) -> ApiKey:
    async with sessions() as db:
        row = await db.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no API key {key_id}", details={"keyId": key_id})
    return row


async def set_quotas(
    sessions: async_sessionmaker[AsyncSession],
    key_id: str,
    *,
    max_sessions: int | None,
    messages_per_day: int | None,
) -> ApiKey:
    """Replace both quotas (None: unlimited)."""
    async with sessions() as db, db.begin():
        row = await db.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            raise NotFound(f"no active API key {key_id}", details={"keyId": key_id})
        row.max_sessions = max_sessions
        row.messages_per_day = messages_per_day
    key_cache.forget(key_id)
    return row


async def revoke_api_key(sessions: async_sessionmaker[AsyncSession], key_id: str) -> ApiKey:
    async with sessions() as db, db.begin():
        row = await db.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            raise NotFound(f"no active API key {key_id}", details={"keyId": key_id})
        row.revoked_at = utcnow()
    key_cache.forget(key_id)
    return row


async def authenticate(sessions: async_sessionmaker[AsyncSession], presented: str) -> ApiKey:
    """The key's row; read from the database at most every `key_cache.TTL_S` seconds."""
    key_id, secret = parse(presented)
    row = key_cache.get(key_id)
    if row is None:

        async def read() -> ApiKey | None:
            async with sessions() as db:
                found = await db.get(ApiKey, key_id)
            if found is not None:
                key_cache.put(found)
            return found

        row = await key_cache.loads.run((id(sessions), key_id), read)
    # Same answer for unknown, revoked and wrong secret: nothing to learn from it.
    if row is None or row.revoked_at is not None:
        raise Unauthorized("invalid API key")
    if not hmac.compare_digest(row.secret_hash, _hash(secret)):
        raise Unauthorized("invalid API key")
    return row


async def ensure_admin_key(sessions: async_sessionmaker[AsyncSession]) -> CreatedKey | None:
    """A first admin key when there is no active one; None when one exists already."""
    existing = [key for key in await list_api_keys(sessions) if key.role == "admin"]
    if existing:
        return None
    return await create_api_key(sessions, name="admin", role="admin")
