"""`wapp sessions qr NAME [--phone N]`: pair a session from the terminal.

The QR is drawn with segno's compact terminal output (two modules per character) and
drawn again each time the engine rotates it, until the session is connected. With
`--phone`, the session pairs by code instead and the code is shown. The state comes from
the database and Redis, where the api's event consumer writes what the engine reports,
so this needs the stack running, exactly as the API does.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import segno
import typer
from rich.console import Console

from appliance import redis_keys
from appliance.cli.admin import Admin
from appliance.db.models import Session
from appliance.errors import CommandFailed, ValidationFailed
from appliance.phones import phone_digits
from appliance.services import sandbox, sessions

# States after which no QR comes without a new start.
_ENDED = frozenset({"failed", "logged_out", "stopped"})
_POLL_S = 0.5

WithAdmin = Callable[[typer.Context, Callable[[Admin], Awaitable[Any]]], Any]
Seen = Callable[[Admin, str], Awaitable[Session]]


def qr_text(value: str) -> str:
    buffer = io.StringIO()
    # Error level L keeps the long wa.me string small enough for an 80-column terminal.
    segno.make(value, error="l").terminal(out=buffer, compact=True, border=2)
    return buffer.getvalue()


class _Screen:
    """Draws each new QR or code: for people a redrawn screen, for scripts JSON lines."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console()
        self.shown: str | None = None

    def line(self, **fields: Any) -> None:
        typer.echo(orjson.dumps(fields, option=orjson.OPT_UTC_Z).decode())

    def pending(self, kind: str, found: sessions.Pending, row: Session) -> None:
        if found.value == self.shown:
            return
        self.shown = found.value
        if self.as_json:
            self.line(**{kind: found.value, "expiresAt": found.expires_at})
            return
        if self.console.is_terminal:
            self.console.clear()
        until = f" (valid until {found.expires_at:%H:%M:%S})" if found.expires_at else ""
        if kind == "qr":
            self.console.print(
                f"session {row.public_name}: scan with WhatsApp on the phone, "
                f"Settings > Linked devices > Link a device{until}"
            )
            # Plain echo: rich would re-wrap the block characters on a narrow terminal.
            typer.echo(qr_text(found.value))
        else:
            self.console.print(
                f"session {row.public_name}: on the phone, Linked devices > Link with phone "
                f"number instead, enter{until}:"
            )
            self.console.print(f"[bold]{found.value[:4]}-{found.value[4:]}[/bold]")
        self.console.print("waiting for the phone ...", style="dim")

    def connected(self, row: Session) -> None:
        if self.as_json:
            self.line(state="connected", session=row.public_name, meJid=row.me_jid)
        else:
            self.console.print(
                f"[green]connected[/green]: session {row.public_name} is {row.me_jid or 'paired'}"
            )


async def _prepare(admin: Admin, row: Session, phone: str | None) -> Session:
    """Ask the engine for a pairing code, or start the session if it is not running."""
    if phone is not None:
        if row.upstream == "sandbox":
            await sandbox.claim_number(admin.writer, admin.principal, phone)
        # An old code must not be shown as the new one.
        await admin.redis.delete(redis_keys.pairing_code_key(row.name))
        return await sessions.request_pairing_code(admin.writer, admin.redis, row, phone)
    if not row.active or row.state in _ENDED:
        return await sessions.act(
            admin.writer, admin.redis, row, "start", settings=admin.settings, reader=admin.reader
        )
    return row


async def _current(admin: Admin, row: Session, by_code: bool) -> sessions.Pending | None:
    try:
        if by_code:
            return await sessions.current_pairing_code(admin.redis, row)
        return await sessions.current_qr(admin.redis, row)
    except (sessions.NoQr, sessions.NoPairingCode):
        return None


async def watch(
    admin: Admin, seen: Seen, ref: str, *, phone: str | None, wait_s: float, screen: _Screen
) -> Session:
    row = await seen(admin, ref)
    if row.state == "connected":
        return row
    since = datetime.now(UTC)
    row = await _prepare(admin, row, phone)
    deadline = time.monotonic() + wait_s
    while True:
        current = await seen(admin, row.id)
        if current.state == "connected":
            return current
        # Only an end reached after our start counts; the row may still show the old one.
        if current.state in _ENDED and current.state_changed_at > since:
            raise CommandFailed(
                f"session {current.public_name} went {current.state}"
                + (f": {current.state_reason}" if current.state_reason else "")
                + f"; `wapp sessions qr {current.public_name}` tries again"
            )
        found = await _current(admin, current, phone is not None)
        if found is not None:
            screen.pending("code" if phone is not None else "qr", found, current)
        if time.monotonic() > deadline:
            raise CommandFailed(
                f"session {current.public_name} is {current.state}, not connected, after "
                f"{wait_s:.0f} s; is the stack running (`wapp status`)?"
            )
        await asyncio.sleep(_POLL_S)


def register(group: typer.Typer, *, with_admin: WithAdmin, seen: Seen) -> None:
    @group.command("qr")
    def qr(
        ctx: typer.Context,
        name: str = typer.Argument(..., help="The session's name or id."),
        phone: str | None = typer.Option(
            None, help="Pair by code for this number instead of a QR."
        ),
        timeout: float = typer.Option(300.0, min=1, help="Seconds to wait for the phone."),
        as_json: bool = typer.Option(
            False, "--json", help="One JSON line per QR or code, and one when connected."
        ),
    ) -> None:
        """Show the session's QR, redrawn as it rotates, until it is connected (then exit
        0); or its pairing code with --phone. Starts the session when it is not running."""
        digits = None
        if phone is not None:
            digits = phone_digits(phone)
            if digits is None:
                raise ValidationFailed(
                    f"--phone {phone} is not a phone number (country code first)",
                    details={"fields": [{"field": "phone", "message": "not a phone number"}]},
                )
        screen = _Screen(as_json)

        async def work(admin: Admin) -> Session:
            return await watch(admin, seen, name, phone=digits, wait_s=timeout, screen=screen)

        screen.connected(with_admin(ctx, work))
