"""`wapp config check|show`: validate and print the effective configuration."""

from __future__ import annotations

import orjson
import typer
from rich.console import Console

from appliance.cli.context import settings, state


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)

    @group.command("check")
    def check(ctx: typer.Context) -> None:
        """Validate the configuration; exit 3 naming the field and file when it is invalid."""
        settings(ctx)
        path = state(ctx).config_path
        Console().print(f"configuration ok ({path or 'defaults, environment and search path'})")

    @group.command("show")
    def show(ctx: typer.Context) -> None:
        """Print the effective configuration as JSON (secrets masked)."""
        data = settings(ctx).model_dump(mode="json")
        for section, field in (
            ("database", "url"),
            ("redis", "url"),
            ("webhooks", "smtp_password"),
        ):
            if data[section].get(field):
                data[section][field] = "***"
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())

    app.add_typer(group, name="config")
