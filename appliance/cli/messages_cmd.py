"""`wapp messages show ID`: one message with its status timeline (GET /v1/messages/{id})."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from appliance.api.routes.messages import MessagePublic
from appliance.cli.admin import Admin
from appliance.cli.output import JSON_OPTION, emit_json
from appliance.db.models import Message, MessageStatusEvent, Session
from appliance.services import messages


def status_line(entry: MessageStatusEvent) -> str:
    detail = f" {entry.detail}" if entry.detail else ""
    return f"{entry.at:%H:%M:%S.%f}"[:-3] + f"  {entry.status}{detail}"


def _summary(row: Message) -> str:
    content = row.payload
    text = content.get("text") or content.get("caption")
    return str(text) if text else row.kind


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Messages and their status timelines.", no_args_is_help=True)

    @group.command("show")
    def show(
        ctx: typer.Context,
        message_id: str = typer.Argument(..., help="The message's id (what a send answered)."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """One message: who, what, its status and every status step with its time."""
        from appliance.cli.sessions_cmd import with_admin

        async def work(admin: Admin) -> tuple[Message, Session, list[MessageStatusEvent]]:
            return await messages.get_visible(admin.reader, admin.principal, message_id)

        row, session, timeline = with_admin(ctx, work)
        if as_json:
            emit_json(MessagePublic.of(row, timeline))
            return
        out = Console()
        arrow = "->" if row.direction == "out" else "<-"
        out.print(
            f"message {row.id} ({row.kind}) {session.public_name} {arrow} {row.chat}: "
            f"[bold]{row.status}[/bold]"
        )
        out.print(f"  {_summary(row)}", highlight=False)
        if row.error_code:
            out.print(f"  [red]{row.error_code}[/red]: {row.error_reason or ''}")
        table = Table("at", "status", "detail", title="timeline")
        for entry in timeline:
            table.add_row(
                entry.at.isoformat(timespec="milliseconds"), entry.status, str(entry.detail or "")
            )
        out.print(table)

    app.add_typer(group, name="messages")
