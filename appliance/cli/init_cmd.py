"""`wapp init --local`: write ./config.toml and the master key if they are missing."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from appliance.cli.context import state
from appliance.errors import UsageError
from appliance.local_install import init_local


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(
        ctx: typer.Context,
        local: bool = typer.Option(False, "--local", help="A local install in this checkout."),
        port: int = typer.Option(8080, help="API port written into a new config."),
    ) -> None:
        """Create the config file and the master key (0600) when missing; never overwrite."""
        if not local:
            raise UsageError("only `wapp init --local` exists so far (the VPS mode comes later)")
        config_path = state(ctx).config_path or Path("config.toml").resolve()
        result = init_local(config_path, data_dir=config_path.parent / "data", port=port)
        out = Console()
        verb = "wrote" if result.config_created else "kept"
        out.print(f"{verb} {result.config_path}")
        verb = "generated" if result.master_key_created else "kept"
        out.print(f"{verb} master key {result.master_key_path}")
