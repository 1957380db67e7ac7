"""`wapp send SESSION TO [TEXT] [--image FILE ...]`: a quick test send, through the same
service as `POST /v1/sessions/{id}/messages` (stored, queued, paced), acting as admin."""

from __future__ import annotations

import asyncio
import mimetypes
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console

from appliance.api.routes.messages import accepted_body
from appliance.cli.admin import Admin
from appliance.cli.messages_cmd import status_line
from appliance.cli.output import emit_json
from appliance.cli.sessions_cmd import with_admin
from appliance.db.models import Session
from appliance.errors import CommandFailed, UsageError, ValidationFailed
from appliance.services import messages, sessions
from appliance.services.outgoing import OutgoingMessage

_KINDS = ("image", "video", "audio", "voice", "document", "sticker")
_CHUNK = 64 * 1024
# A sent message is settled for a quick test once it reached one of these.
_SETTLED = frozenset({"delivered", "read", "failed"})


def _body(to: str, text: str | None, kind: str | None, file: Path | None) -> Any:
    from pydantic import TypeAdapter

    raw: dict[str, Any] = {"to": to}
    if kind is None:
        if not text:
            raise UsageError("give TEXT, or a file with --image/--video/--audio/--document ...")
        raw |= {"type": "text", "text": text}
    else:
        raw |= {"type": kind}
        if text:
            raw["caption"] = text
        if file is not None and kind == "document":
            raw["filename"] = file.name
    try:
        return TypeAdapter(OutgoingMessage).validate_python(raw)
    except ValidationError as exc:
        fields = [
            {"field": ".".join(str(p) for p in e["loc"][1:] or e["loc"]), "message": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        raise ValidationFailed(
            "; ".join(f"{f['field']}: {f['message']}" for f in fields),
            details={"fields": fields},
        ) from exc


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, _CHUNK):
            yield chunk


async def _follow(admin: Admin, message_id: str, wait_s: float, as_json: bool) -> str:
    """Print each new status of the message until it is delivered, read or failed."""
    printed = 0
    deadline = time.monotonic() + wait_s
    while True:
        row, _, timeline = await messages.get_visible(admin.reader, admin.principal, message_id)
        for entry in timeline[printed:]:
            if not as_json:
                Console().print(status_line(entry))
        printed = len(timeline)
        if row.status in _SETTLED:
            return row.status
        if time.monotonic() > deadline:
            raise CommandFailed(
                f"message {message_id} is {row.status} after {wait_s:.0f} s "
                f"(`wapp messages show {message_id}` follows it)"
            )
        await asyncio.sleep(0.5)


def register(app: typer.Typer) -> None:
    @app.command("send")
    def send(
        ctx: typer.Context,
        session: str = typer.Argument(..., help="The session's name or id."),
        to: str = typer.Argument(..., help="A phone number (country code first) or a JID."),
        text: str | None = typer.Argument(None, help="The text; with a file, its caption."),
        image: Path | None = typer.Option(None, exists=True, dir_okay=False, help="Image file."),
        video: Path | None = typer.Option(None, exists=True, dir_okay=False, help="Video file."),
        audio: Path | None = typer.Option(None, exists=True, dir_okay=False, help="Audio file."),
        voice: Path | None = typer.Option(
            None, exists=True, dir_okay=False, help="Voice note (audio/ogg; codecs=opus)."
        ),
        document: Path | None = typer.Option(
            None, exists=True, dir_okay=False, help="Any file, sent as a document."
        ),
        sticker: Path | None = typer.Option(
            None, exists=True, dir_okay=False, help="Sticker (image/webp)."
        ),
        wait: bool = typer.Option(
            False, "--wait", help="Follow its statuses until delivered, read or failed."
        ),
        timeout: float = typer.Option(60.0, min=1, help="Seconds --wait waits."),
        as_json: bool = typer.Option(False, "--json", help="JSON output (the API's answer)."),
    ) -> None:
        """Send a message now (queued and paced as through the API); prints its id."""
        given = (image, video, audio, voice, document, sticker)
        files = {k: v for k, v in zip(_KINDS, given, strict=True) if v}
        if len(files) > 1:
            raise UsageError("one file at most: --image, --video, --audio, --voice, ...")
        kind, file = next(iter(files.items()), (None, None))
        body = _body(to, text, kind, file)

        async def work(admin: Admin) -> tuple[messages.Accepted, Session, str | None]:
            row = await sessions.get(admin.reader, admin.principal, session)
            upload = None
            if file is not None:
                upload = messages.Upload(
                    filename=file.name,
                    content_type=mimetypes.guess_type(file.name)[0],
                    chunks=_chunks(file),
                )
            accepted = await messages.send(
                writer=admin.writer,
                reader=admin.reader,
                redis=admin.redis,
                settings=admin.settings,
                principal=admin.principal,
                session=row,
                body=body,
                upload=upload,
            )
            if not as_json:
                Console().print(
                    f"queued message {accepted.message.id} from {row.public_name} to {body.to}"
                )
            final = None
            if wait:
                final = await _follow(admin, accepted.message.id, timeout, as_json)
            return accepted, row, final

        accepted, row, final = with_admin(ctx, work)
        if as_json:
            shown = accepted_body(accepted.message, row)
            emit_json({**shown.model_dump(mode="json", by_alias=True), "finalStatus": final})
        if final == "failed":
            raise typer.Exit(1)
