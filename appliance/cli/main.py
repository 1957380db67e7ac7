"""`wapp`: the admin CLI. Commands are thin: parse, call a service, format.

Errors from services are `WappError`s; `run()` maps them once to exit codes
(0 ok, 1 failure, 2 usage, 3 configuration).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from appliance.cli.context import state
from appliance.errors import WappError

app = typer.Typer(
    name="wapp",
    help="wapp: a self-hosted WhatsApp gateway appliance.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"wapp {version('wapp')}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Config file (default: $WAPP_CONFIG, /etc/wapp/config.toml, ./config.toml).",
    ),
    _show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    state(ctx).config_path = config


def _register() -> None:
    # Imported here so that `appliance.cli.main` stays importable without side effects.
    from appliance.cli import commands

    commands.register(app)


def run() -> None:
    _register()
    err = Console(stderr=True)
    try:
        # Standalone mode: Typer itself answers usage errors with exit 2.
        app()
    except WappError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
