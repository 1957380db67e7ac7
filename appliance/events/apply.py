"""Applying one engine event to the system of record, inside the consumer's transaction.

Every write here is idempotent (unique constraints + insert_or_ignore, monotonic status
ranks, state timestamps), so replaying the stream twice changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from appliance.contracts import (
    CommandRejectedEvent,
    Event,
    MessageReceivedEvent,
    MessageStatusEvent,
    PresenceUpdateEvent,
    SessionStateEvent,
    WaVersionRefusedEvent,
)
from appliance.db.models import Message, Session
from appliance.db.models import MessageStatusEvent as StatusRow
from appliance.db.statements import insert_or_ignore

log = logging.getLogger("appliance.events")

# A status only moves forward; `failed` never overwrites a delivery the recipient saw.
_RANK = {"queued": 0, "sending": 1, "sent": 2, "failed": 2, "delivered": 3, "read": 4}
_SEND_COMMANDS = frozenset(
    {"send_text", "send_media", "send_location", "send_contact", "send_reaction"}
)


@dataclass(frozen=True)
class Applied:
    """Who the event belongs to, for webhook fan-out and live-event filtering."""

    session_id: str | None
    owner_key_id: str | None
    # The name its owner gave the session (events carry its engine name).
    session_name: str | None = None
    # Which engine runs the session (admin alerts are keyed on it).
    upstream: str | None = None
    # False for a WhatsApp message already received (a redelivery): no second webhook.
    fan_out: bool = True


async def _session(db: AsyncSession, name: str | None) -> Session | None:
    if name is None:
        return None
    result = await db.scalars(sa.select(Session).where(col(Session.name) == name))
    return result.first()


async def _session_state(db: AsyncSession, event: SessionStateEvent, row: Session) -> None:
    if event.timestamp < row.state_changed_at:
        return  # an older event delivered late must not roll the state back
    p = event.payload
    row.state = p.state
    row.state_reason = p.reason
    row.state_reason_code = p.reason_code
    row.state_changed_at = event.timestamp
    if p.me is not None:
        row.me_jid, row.me_lid, row.me_push_name = p.me.jid, p.me.lid, p.me.push_name
    if p.state == "connected" and row.paired_at is None:
        row.paired_at = event.timestamp
    if p.state == "logged_out":
        # A logged-out number must pair again; its identity is gone.
        row.me_jid = row.me_lid = None
        row.paired_at = None
        row.active = False


# States a refused login leaves a session in (the engine reports the close first).
_REFUSABLE_STATES = frozenset({"connecting", "reconnecting", "failed"})


async def _version_refused(event: WaVersionRefusedEvent, row: Session) -> None:
    """Name the cause in the state reason shown by the API. The state itself stays what
    the engine reported: the refusal only explains the close it already reported (the
    engine publishes it after that close's `session.state`)."""
    if event.timestamp < row.state_changed_at or row.state not in _REFUSABLE_STATES:
        return  # the session moved on since (connected, stopped, ...): nothing to explain
    p = event.payload
    old = row.state_reason
    if old is not None and old.startswith(p.reason):
        return
    # `failed` says how many attempts were made: keep that after the cause.
    keep = row.state == "failed" and old
    row.state_reason = f"{p.reason}; {old}" if keep else p.reason
    row.state_reason_code = p.reason_code


async def _message_status(db: AsyncSession, event: MessageStatusEvent) -> None:
    p = event.payload
    message = await db.get(Message, str(p.message_id))
    if message is None or message.direction != "out":
        log.warning("status for an unknown message", extra={"message_id": str(p.message_id)})
        return
    detail = {
        k: v for k, v in {"code": p.code, "reason": p.reason, "recipient": p.recipient}.items() if v
    }
    await insert_or_ignore(
        db,
        StatusRow(
            message_id=message.id,
            status=p.status,
            at=event.timestamp,
            trace_id=event.trace_id,
            detail=detail or None,
        ),
    )
    if p.wa_id and not message.wa_id:
        message.wa_id = p.wa_id
    if p.status == "sent" and message.sent_at is None:
        message.sent_at = event.timestamp
    if _RANK[p.status] > _RANK.get(message.status, 0) or (
        p.status == "failed" and message.status in ("queued", "sending")
    ):
        message.status = p.status
        if p.status == "failed":
            message.error_code, message.error_reason = p.code, p.reason


async def _message_received(db: AsyncSession, event: MessageReceivedEvent, row: Session) -> bool:
    """False when (session, inbound, wa_id) is already stored: WhatsApp delivered it again."""
    p = event.payload
    return await insert_or_ignore(
        db,
        Message(
            session_id=row.id,
            direction="in",
            kind=p.kind,
            chat=p.chat,
            sender_pn=p.from_pn,
            sender_lid=p.from_lid,
            payload=p.model_dump(mode="json"),
            status="received",
            wa_id=p.wa_id,
            sent_at=p.sent_at,
            trace_id=event.trace_id,
        ),
    )


async def _command_rejected(db: AsyncSession, event: CommandRejectedEvent) -> None:
    p = event.payload
    # Message commands carry the message id as their envelope id (services/commands.py).
    if p.command_type not in _SEND_COMMANDS or p.command_id is None:
        return
    message = await db.get(Message, p.command_id)
    if message is None or message.status not in ("queued", "sending"):
        return
    await insert_or_ignore(
        db,
        StatusRow(
            message_id=message.id,
            status="failed",
            at=event.timestamp,
            trace_id=event.trace_id,
            detail={"code": p.code, "reason": p.reason},
        ),
    )
    message.status = "failed"
    message.error_code, message.error_reason = p.code, p.reason


async def apply_event(db: AsyncSession, event: Event) -> Applied:
    row = await _session(db, event.session)
    owner = row.owner_key_id if row else None
    session_id = row.id if row else None
    fan_out = True
    if isinstance(event, SessionStateEvent) and row is not None:
        await _session_state(db, event, row)
    elif isinstance(event, MessageStatusEvent):
        await _message_status(db, event)
    elif isinstance(event, MessageReceivedEvent) and row is not None:
        fan_out = await _message_received(db, event, row)
    elif isinstance(event, CommandRejectedEvent):
        await _command_rejected(db, event)
    elif isinstance(event, WaVersionRefusedEvent) and row is not None:
        await _version_refused(event, row)
    elif isinstance(event, PresenceUpdateEvent):
        pass  # live only: presence is not part of the record
    if row is None and event.session is not None:
        log.warning("event for an unknown session", extra={"session": event.session})
    return Applied(
        session_id=session_id,
        owner_key_id=owner,
        session_name=row.public_name if row else None,
        upstream=row.upstream if row else None,
        fan_out=fan_out,
    )
