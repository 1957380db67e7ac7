"""`wapp sessions list|show|create|start|stop|restart|logout|delete|qr`: the same services
as `/v1/sessions`, acting as admin (cli/admin.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.table import Table

from appliance.api.routes.sessions import SessionCreate, SessionPublic
from appliance.cli import pairing_view
from appliance.cli.admin import Admin, admin_access
from appliance.cli.context import settings
from appliance.cli.output import JSON_OPTION, emit_json, state_style
from appliance.contracts import PacingOverrides, Upstream
from appliance.db.models import Session
from appliance.errors import CommandFailed, ValidationFailed
from appliance.phones import phone_digits
from appliance.services import session_create, session_liveness, sessions

T = TypeVar("T")
NAME = typer.Argument(..., help="The session's name or id.")


def with_admin(ctx: typer.Context, work: Callable[[Admin], Awaitable[T]]) -> T:
    async def go() -> T:
        async with admin_access(settings(ctx)) as admin:
            return await work(admin)

    return asyncio.run(go())


async def seen(admin: Admin, ref: str) -> Session:
    """The session as GET /v1/sessions/{ref} shows it: its row with the engine's view."""
    row = await sessions.get(admin.reader, admin.principal, ref)
    [shown] = await session_liveness.seen_by_engine(admin.redis, [row])
    return shown


def _table(rows: list[Session]) -> Table:
    table = Table("name", "upstream", "state", "phone / account", "active", "since")
    for r in rows:
        style = state_style(r.state)
        state = f"[{style}]{r.state}[/{style}]"
        if r.state_reason and r.state != "connected":
            state += f" [dim]({r.state_reason})[/dim]"
        table.add_row(
            r.public_name,
            r.upstream,
            state,
            r.me_jid or r.phone or "-",
            "yes" if r.active else "no",
            r.state_changed_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


def _show(row: Session) -> None:
    out = Console()
    out.print(_table([row]))
    out.print(f"id {row.id}  engine name {row.name}  created {row.created_at:%Y-%m-%d %H:%M:%S}")
    if row.pacing:
        out.print(f"pacing {row.pacing}")


def _report(row: Session, as_json: bool, verb: str) -> None:
    if as_json:
        emit_json(SessionPublic.of(row))
    else:
        Console().print(f"{verb} session {row.public_name} (state {row.state})")


def _upstream(sandbox: bool, upstream: str | None) -> Upstream:
    chosen = upstream or ("sandbox" if sandbox else "whatsapp")
    if chosen not in ("whatsapp", "sandbox"):
        raise typer.BadParameter("whatsapp or sandbox", param_hint="--upstream")
    return "sandbox" if chosen == "sandbox" else "whatsapp"


def _phone(value: str | None) -> str | None:
    if value is None:
        return None
    digits = phone_digits(value)
    if digits is None:
        raise ValidationFailed(
            f"--phone {value} is not a phone number (country code first, 7 to 20 digits)",
            details={"fields": [{"field": "phone", "message": "not a phone number"}]},
        )
    return digits


def _name(name: str) -> str:
    """Checked as the API checks it (SessionCreate.name)."""
    try:
        SessionCreate(name=name)
    except ValueError as exc:
        raise ValidationFailed(
            f"{name!r} is not a session name: lowercase letters, digits, - and _, "
            "starting with a letter or digit, at most 64",
            details={"fields": [{"field": "name", "message": "invalid session name"}]},
        ) from exc
    return name


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Sessions (WhatsApp numbers): create, pair, start, stop.", no_args_is_help=True
    )

    @group.command("list")
    def list_(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
        """Every session with its state (as its engine last reported it)."""

        async def work(admin: Admin) -> list[Session]:
            rows = await sessions.list_visible(admin.reader, admin.principal)
            return await session_liveness.seen_by_engine(admin.redis, rows)

        rows = with_admin(ctx, work)
        if as_json:
            emit_json({"items": [SessionPublic.of(r) for r in rows]})
            return
        Console().print(_table(rows) if rows else "no sessions yet: `wapp sessions create NAME`")

    @group.command("show")
    def show(ctx: typer.Context, name: str = NAME, as_json: bool = JSON_OPTION) -> None:
        """One session: state, reason, account, pacing."""
        row = with_admin(ctx, lambda admin: seen(admin, name))
        if as_json:
            emit_json(SessionPublic.of(row))
        else:
            _show(row)

    @group.command("create")
    def create(
        ctx: typer.Context,
        name: str = typer.Argument(..., help="Lowercase letters, digits, - and _."),
        sandbox: bool = typer.Option(False, "--sandbox", help="On the bundled simulator."),
        upstream: str | None = typer.Option(None, help="whatsapp (default) or sandbox."),
        phone: str | None = typer.Option(
            None, help="Pair by code for this number; in the sandbox the phone that pairs it."
        ),
        push_name: str | None = typer.Option(None, help="The name contacts see."),
        no_pacing: bool = typer.Option(
            False, "--no-pacing", help="Send without the anti-ban pacing (sandbox tests)."
        ),
        wait: bool = typer.Option(False, "--wait", help="Wait until it is connected."),
        timeout: float = typer.Option(120.0, min=1, help="Seconds --wait waits."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Create a session and start it. A sandbox session with --phone pairs itself;
        otherwise `wapp sessions qr NAME` shows its QR."""
        checked = _name(name)
        chosen = _upstream(sandbox, upstream)
        number = _phone(phone)

        async def work(admin: Admin) -> Session:
            row = await session_create.create_named(
                writer=admin.writer,
                reader=admin.reader,
                redis=admin.redis,
                settings=admin.settings,
                principal=admin.principal,
                name=checked,
                upstream=chosen,
                pacing=PacingOverrides(enabled=False) if no_pacing else None,
                push_name=push_name,
                phone=number,
            )
            if wait:
                return await _until_connected(admin, row, timeout)
            return row

        row = with_admin(ctx, work)
        _report(row, as_json, "created")
        if not wait and not as_json and row.state != "connected":
            hint = (
                "it pairs itself"
                if chosen == "sandbox" and number
                else f"`wapp sessions qr {row.public_name}` shows its QR"
            )
            Console().print(f"{hint}; `wapp sessions show {row.public_name}` follows its state")

    def _action(action: sessions.Action, verb: str, doc: str) -> None:
        def command(ctx: typer.Context, name: str = NAME, as_json: bool = JSON_OPTION) -> None:
            async def work(admin: Admin) -> Session:
                row = await sessions.get(admin.reader, admin.principal, name)
                return await sessions.act(
                    admin.writer,
                    admin.redis,
                    row,
                    action,
                    settings=admin.settings,
                    reader=admin.reader,
                )

            _report(with_admin(ctx, work), as_json, verb)

        command.__doc__ = doc
        group.command(action)(command)

    _action("start", "started", "Start (or resume) the session.")
    _action("stop", "stopped", "Stop the session; it stays paired.")
    _action("restart", "restarted", "Reconnect the session.")
    _action("logout", "logged out", "Unlink the number from the phone; the session stays.")

    @group.command("delete")
    def delete(
        ctx: typer.Context,
        name: str = NAME,
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    ) -> None:
        """Log the number out and delete the session with its messages."""

        async def find(admin: Admin) -> Session:
            return await sessions.get(admin.reader, admin.principal, name)

        row = with_admin(ctx, find)
        if not yes:
            typer.confirm(
                f"delete session {row.public_name} and all its messages?", abort=True, err=True
            )

        async def work(admin: Admin) -> None:
            await sessions.delete(admin.writer, admin.redis, row)

        with_admin(ctx, work)
        Console().print(f"deleted session {row.public_name}")

    pairing_view.register(group, with_admin=with_admin, seen=seen)
    app.add_typer(group, name="sessions")


async def _until_connected(admin: Admin, row: Session, wait_s: float) -> Session:
    deadline = time.monotonic() + wait_s
    while True:
        shown = await seen(admin, row.id)
        if shown.state == "connected":
            return shown
        if time.monotonic() > deadline:
            raise CommandFailed(
                f"session {shown.public_name} is {shown.state}, not connected, "
                f"after {wait_s:.0f} s" + (f" ({shown.state_reason})" if shown.state_reason else "")
            )
        await asyncio.sleep(0.5)
