"""`wapp service run`: what the systemd unit runs (docs/operations.md, The unit)."""

from __future__ import annotations

from pathlib import Path

import typer

from appliance.cli.context import settings, state
from appliance.service.runner import run_service
from appliance.settings import resolve_config_path


def register(app: typer.Typer) -> None:
    service = typer.Typer(help="The appliance as a systemd service.", no_args_is_help=True)
    app.add_typer(service, name="service")

    @service.command("run")
    def run(ctx: typer.Context) -> None:
        """Run the stack in the foreground under supervisord; READY=1 to $NOTIFY_SOCKET
        once /readyz answers 200; exit with supervisord's status."""
        conf = settings(ctx)
        found = resolve_config_path(state(ctx).config_path)
        config_path = found.resolve() if found is not None else None
        raise typer.Exit(run_service(conf, config_path=config_path, workdir=Path.cwd()))
