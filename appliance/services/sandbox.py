"""The sandbox: simulated contacts talking to sandbox sessions, through the simulator's
control API (`http://127.0.0.1:{[sandbox] control_port}`, docs/simulator.md).

Only when `[sandbox] enabled`. A tenant reaches only its own sandbox sessions, and sees
only what a contact received from them. A simulated number (a sandbox session's phone or
a contact) belongs to the key that used it first (`sandbox_numbers`): for another tenant
it answers 404, so nobody pairs, writes as, or reads the contacts of another's numbers.
Admin keys may use every number (and claim the free ones they use).
"""

from __future__ import annotations

import re
from typing import Any, Final

import httpx
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from appliance.auth.principal import Principal
from appliance.db.models import SandboxNumber, Session
from appliance.errors import Conflict, NotFound, WappError
from appliance.services import sessions
from appliance.services.media import MediaTooLarge
from appliance.settings import Settings

_TIMEOUT_S: Final = 10.0


class SandboxUnavailable(WappError):
    status = 503
    code = "SANDBOX_UNAVAILABLE"
    retryable = True


class SandboxRefused(WappError):
    """The simulator refused; its own code and status carry over (400 becomes 422)."""

    status = 422
    code = "SANDBOX_REFUSED"

    def __init__(self, message: str, *, status: int, details: dict[str, Any]) -> None:
        super().__init__(message, details=details)
        self.status = status  # type: ignore[misc]  # per instance: the simulator decides


def require_enabled(settings: Settings) -> None:
    if not settings.sandbox.enabled:
        raise NotFound("the sandbox is not enabled ([sandbox] enabled = false)")


def _not_yours(phone: str) -> NotFound:
    # The same answer as for a number nobody has: nothing to learn about other tenants.
    return NotFound(f"no sandbox number {phone} of this key", details={"phone": phone})


async def claim_number(
    writer: async_sessionmaker[AsyncSession], principal: Principal, phone: str
) -> None:
    """Make `phone` the caller's if free; 404 if another key's (an admin may use it)."""
    if not principal.can_see(await _claim(writer, principal.key.id, phone)):
        raise _not_yours(phone)


async def _claim(writer: async_sessionmaker[AsyncSession], key_id: str, phone: str) -> str | None:
    """The number's owner, after making it `key_id`'s if it had none."""
    try:
        async with writer() as db, db.begin():
            found = await db.get(SandboxNumber, phone)
            if found is not None:
                return found.owner_key_id
            db.add(SandboxNumber(phone=phone, owner_key_id=key_id))
        return key_id
    except IntegrityError:
        # Claimed by a concurrent request between our read and our insert.
        async with writer() as db:
            found = await db.get(SandboxNumber, phone)
        return found.owner_key_id if found is not None else None


async def require_number(
    reader: async_sessionmaker[AsyncSession], principal: Principal, phone: str
) -> None:
    """404 unless `phone` is the caller's (admins: any number)."""
    if principal.is_admin:
        return
    async with reader() as db:
        owner = await db.scalar(
            sa.select(col(SandboxNumber.owner_key_id)).where(col(SandboxNumber.phone) == phone)
        )
    if owner is None or owner != principal.key.id:
        raise _not_yours(phone)


def phone_of(row: Session) -> str | None:
    """The session's own number: asked at creation, else the paired account's."""
    if row.phone:
        return row.phone
    if row.me_jid:
        return re.split(r"[:@]", row.me_jid, maxsplit=1)[0]
    return None


async def _visible_sandbox_sessions(
    reader: async_sessionmaker[AsyncSession], principal: Principal
) -> list[Session]:
    query = sa.select(Session).where(col(Session.upstream) == "sandbox")
    if not principal.is_admin:
        query = query.where(col(Session.owner_key_id) == principal.key.id)
    async with reader() as db:
        return list((await db.scalars(query)).all())


async def target(
    reader: async_sessionmaker[AsyncSession],
    principal: Principal,
    *,
    session: str | None,
    to: str | None,
) -> tuple[Session, str]:
    """The sandbox session a contact writes to, by id/name or by its phone, and its phone."""
    if session is not None:
        row = await sessions.get(reader, principal, session)
        if row.upstream != "sandbox":
            raise Conflict(
                f"session {row.public_name} is not a sandbox session",
                details={"session": row.public_name},
            )
    else:
        matches = [
            r for r in await _visible_sandbox_sessions(reader, principal) if phone_of(r) == to
        ]
        if not matches:
            raise NotFound(f"no sandbox session with phone {to}", details={"to": to})
        row = matches[0]
    phone = phone_of(row)
    if phone is None:
        raise Conflict(
            f"session {row.public_name} has no phone yet (create it with one, or pair it first)",
            details={"session": row.public_name},
        )
    return row, phone


async def _call(settings: Settings, method: str, path: str, json: Any = None) -> Any:
    url = f"http://127.0.0.1:{settings.sandbox.control_port}{path}"
    try:
        async with httpx.AsyncClient(timeout=_TIMEOUT_S, trust_env=False) as client:
            response = await client.request(method, url, json=json)
    except httpx.HTTPError as exc:
        raise SandboxUnavailable(
            f"the simulator's control API does not answer ({type(exc).__name__})",
            details={"controlPort": settings.sandbox.control_port},
        ) from exc
    try:
        body = response.json()
    except ValueError as exc:
        raise SandboxUnavailable(f"the simulator answered {response.status_code}") from exc
    if response.is_success and body.get("success"):
        return body.get("data")
    error = body.get("error") or {}
    status = 422 if response.status_code == 400 else response.status_code
    raise SandboxRefused(
        f"the simulator refused: {error.get('message', response.status_code)}",
        status=status if status in (404, 409, 413, 422) else 502,
        details={"sandboxCode": error.get("code"), **(error.get("details") or {})},
    )


async def configure_contact(
    settings: Settings,
    *,
    contact: str,
    push_name: str | None,
    delivery_delay_ms: int | None,
    read_delay_ms: int | None,
    reads: bool,
) -> Any:
    """Create the simulated contact, or retune when it sends delivery and read receipts."""
    require_enabled(settings)
    body: dict[str, Any] = {"phone": contact, "pushName": push_name}
    if delivery_delay_ms is not None:
        body["deliveryDelayMs"] = delivery_delay_ms
    # None: this contact never reads (no blue ticks), as a person who ignores a message.
    body["readDelayMs"] = read_delay_ms if reads else None
    result: dict[str, Any] = await _call(settings, "POST", "/contacts", body)
    return result["contact"]


async def send_from_contact(
    settings: Settings,
    *,
    contact: str,
    to_phone: str,
    push_name: str | None,
    text: str | None,
    media: dict[str, Any] | None,
) -> Any:
    """Make sure the contact exists, then have it send to the session's number."""
    require_enabled(settings)
    await _call(settings, "POST", "/contacts", {"phone": contact, "pushName": push_name})
    body: dict[str, Any] = {"to": to_phone}
    if text is not None:
        body["text"] = text
    if media is not None:
        body["media"] = media
    return await _call(settings, "POST", f"/contacts/{contact}/messages", body)


async def received_by_contact(
    reader: async_sessionmaker[AsyncSession],
    settings: Settings,
    principal: Principal,
    contact: str,
) -> list[dict[str, Any]]:
    """What the contact received: a tenant sees only messages from its own sessions."""
    require_enabled(settings)
    items: list[dict[str, Any]] = await _call(settings, "GET", f"/contacts/{contact}/received")
    if principal.is_admin:
        return items
    own = await _visible_sandbox_sessions(reader, principal)
    phones = {p for p in (phone_of(r) for r in own) if p}
    lids = {r.me_lid for r in own if r.me_lid}

    def mine(item: dict[str, Any]) -> bool:
        sender = re.split(r"[:@]", str(item.get("from") or ""), maxsplit=1)[0]
        return sender in phones or item.get("fromLid") in lids or item.get("from") in lids

    return [item for item in items if mine(item)]


def check_media_size(data_base64: str, settings: Settings) -> None:
    size = len(data_base64) * 3 // 4
    if size > settings.media.max_bytes:
        raise MediaTooLarge(
            f"media larger than {settings.media.max_bytes} bytes",
            details={"maxBytes": settings.media.max_bytes, "size": size},
        )
