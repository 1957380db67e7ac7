"""`wapp engine`: the engine program supervisord runs (Node, exec'd)."""

from __future__ import annotations

import enum

import typer

from appliance.cli.context import settings
from appliance.stack.engine_process import exec_engine


class UpstreamChoice(enum.StrEnum):
    whatsapp = "whatsapp"
    sandbox = "sandbox"


def register(app: typer.Typer) -> None:
    @app.command("engine")
    def engine(
        ctx: typer.Context,
        upstream: UpstreamChoice = typer.Option(
            UpstreamChoice.whatsapp, "--upstream", help="One engine process per upstream."
        ),
    ) -> None:
        """Run the engine in the foreground (supervisord runs it for `wapp up`)."""
        exec_engine(settings(ctx), "sandbox" if upstream is UpstreamChoice.sandbox else "whatsapp")
