"""`wapp demo`: the sandbox tour for someone who just installed. A simulated contact, a
session that pairs itself, a message out with its receipts, a reply in; every step
through the same services as the API, on the bundled simulator (nothing reaches
WhatsApp). Run again, it reuses its session and contact."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import typer
from rich.console import Console
from rich.panel import Panel

from appliance.cli.admin import Admin
from appliance.cli.sessions_cmd import seen, with_admin
from appliance.contracts import PacingOverrides
from appliance.db.models import Message, Session
from appliance.errors import CommandFailed, NotFound
from appliance.services import messages, outgoing, sandbox, session_create, sessions

T = TypeVar("T")
_SETTLED = ("read", "failed")


async def _until(what: str, probe: Callable[[], Awaitable[T | None]], wait_s: float) -> T:
    deadline = time.monotonic() + wait_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise CommandFailed(f"the demo waited {wait_s:.0f} s for {what}; `wapp doctor` helps")
        await asyncio.sleep(0.3)


async def _session(admin: Admin, name: str, phone: str) -> Session:
    try:
        row = await sessions.get(admin.reader, admin.principal, name)
    except NotFound:
        return await session_create.create_named(
            writer=admin.writer,
            reader=admin.reader,
            redis=admin.redis,
            settings=admin.settings,
            principal=admin.principal,
            name=name,
            upstream="sandbox",
            pacing=PacingOverrides(enabled=False),
            push_name="wapp demo",
            phone=phone,
        )
    if row.upstream != "sandbox":
        raise CommandFailed(f"session {name} is not a sandbox session; `--session` another")
    if not row.active:
        row = await sessions.act(
            admin.writer, admin.redis, row, "start", settings=admin.settings, reader=admin.reader
        )
    return row


async def tour(admin: Admin, out: Console, *, name: str, phone: str, contact: str) -> None:
    wait_s = 90.0
    sandbox.require_enabled(admin.settings)
    with out.status("a simulated contact, Carol, who reads what she gets ..."):
        await sandbox.claim_number(admin.writer, admin.principal, contact)
        await sandbox.configure_contact(
            admin.settings,
            contact=contact,
            push_name="Carol",
            delivery_delay_ms=300,
            read_delay_ms=1200,
            reads=True,
        )
    out.print(f"[green]1[/green] contact Carol is +{contact} (simulated)")

    with out.status(f"session {name} pairs itself (its simulated phone scans the QR) ..."):
        row = await _session(admin, name, phone)

        async def connected() -> Session | None:
            shown = await seen(admin, row.id)
            return shown if shown.state == "connected" else None

        row = await _until(f"session {name} to connect", connected, wait_s)
    out.print(f"[green]2[/green] session {name} is connected as {row.me_jid}")

    body = outgoing.TextBody(type="text", to=f"{contact}@s.whatsapp.net", text="Hi Carol!")
    accepted = await messages.send(
        writer=admin.writer,
        reader=admin.reader,
        redis=admin.redis,
        settings=admin.settings,
        principal=admin.principal,
        session=row,
        body=body,
    )
    message_id = accepted.message.id
    out.print(f'[green]3[/green] {name} -> Carol: "Hi Carol!"  (message {message_id})')
    printed = 0
    with out.status("its receipts: sent, delivered, read ..."):

        async def settled() -> Message | None:
            nonlocal printed
            found, _, timeline = await messages.get_visible(
                admin.reader, admin.principal, message_id
            )
            for step in timeline[printed:]:
                out.print(f"    {step.at:%H:%M:%S.%f}"[:-3] + f"  {step.status}")
            printed = len(timeline)
            return found if found.status in _SETTLED else None

        final = await _until("the read receipt", settled, wait_s)
    if final.status == "failed":
        raise CommandFailed(f"the message failed: {final.error_reason}")

    since = datetime.now(UTC)
    with out.status("Carol answers ..."):
        await sandbox.send_from_contact(
            admin.settings,
            contact=contact,
            to_phone=sandbox.phone_of(row) or phone,
            push_name="Carol",
            text="Hello! Got it.",
            media=None,
        )

        async def reply() -> Message | None:
            rows, _ = await messages.list_for_session(
                admin.reader, row, direction="in", since=since, limit=1
            )
            return rows[0] if rows else None

        inbound = await _until("Carol's reply", reply, wait_s)
    out.print(f'[green]4[/green] Carol -> {name}: "{inbound.payload.get("text")}"  ({inbound.id})')


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        ctx: typer.Context,
        session: str = typer.Option("demo", help="The sandbox session the tour uses."),
        phone: str = typer.Option("15550100", help="Its simulated phone number."),
        contact: str = typer.Option("15559000", help="The simulated contact's number."),
    ) -> None:
        """A tour on the sandbox: a contact, a session that pairs itself, a message out
        and its receipts, a reply in. Needs `[sandbox] enabled = true`."""
        out = Console()
        out.print(Panel.fit("wapp demo: everything below runs on the bundled simulator"))

        async def work(admin: Admin) -> None:
            await tour(admin, out, name=session, phone=phone, contact=contact)

        with_admin(ctx, work)
        out.print(
            Panel.fit(
                f"done. The same through the API: docs/api.md; see it again with "
                f"`wapp sessions show {session}`, `wapp messages show ID`, or send "
                f"yourself: `wapp send {session} {contact} hello --wait`"
            )
        )
