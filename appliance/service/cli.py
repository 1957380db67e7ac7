"""`wapp service run`: what the systemd unit runs (docs/operations.md, The unit)."""

from __future__ import annotations

from pathlib import Path

import typer

from appliance.cli.context import settings, state
from appliance.service import backup as backups
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

    @service.command("backup")
    def backup(
        ctx: typer.Context,
        dest: Path | None = typer.Option(
            None, "--dest", help="New directory (default: <data_dir>/backups/<UTC time>)."
        ),
    ) -> None:
        """Copy the database and Redis's AOF (the stack must be stopped); print where."""
        conf = settings(ctx)
        target = dest or backups.default_destination(conf)
        taken = backups.backup(conf, target)
        typer.echo(f"{target} ({', '.join(taken) or 'nothing to copy'})")

    @service.command("restore")
    def restore(
        ctx: typer.Context,
        source: Path = typer.Argument(..., help="A directory `wapp service backup` wrote."),
    ) -> None:
        """Put back the database and Redis's AOF from a backup (the stack must be stopped)."""
        restored = backups.restore(settings(ctx), source)
        typer.echo(f"restored {', '.join(restored) or 'nothing'} from {source}")
