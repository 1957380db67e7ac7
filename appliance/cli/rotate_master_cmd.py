"""`wapp keys rotate-master`: thin over appliance/security/rotation.py."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn

from appliance.cli.context import settings
from appliance.security.rotation import RotationReport, rotate_master

_PHASES = {
    "next": "new key written",
    "sessions": "session data keys re-wrapped",
    "webhooks": "webhook secrets re-wrapped",
    "swap": "new key swapped in",
    "final": "last pass over the old key",
}


def register(group: typer.Typer) -> None:
    @group.command("rotate-master")
    def rotate_master_cmd(ctx: typer.Context) -> None:
        """A new master key re-wraps every session's data key and webhook secret, online.

        Interrupted, it loses nothing: run it again and it finishes where it stopped.
        """
        s = settings(ctx)
        out = Console()
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=out) as bar:
            task = bar.add_task("rotating the master key", total=None)

            def progress(phase: str, done: int) -> None:
                count = f" ({done})" if phase in ("sessions", "webhooks") else ""
                bar.update(task, description=f"{_PHASES[phase]}{count}")

            report: RotationReport = asyncio.run(rotate_master(s, progress))
        verb = "finished an interrupted rotation" if report.resumed else "rotated"
        out.print(
            f"{verb}: {report.sessions_rewrapped} session data key(s) and "
            f"{report.secrets_rewrapped} webhook secret(s) re-wrapped; "
            f"{s.master_key_path} holds the new key"
        )
