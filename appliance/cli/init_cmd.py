"""`wapp init --local | --system`: write the config file and the master key if missing."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

from appliance.cli.context import state
from appliance.errors import UsageError
from appliance.local_install import init_local, init_system
from appliance.settings import SYSTEM_CONFIG


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(
        ctx: typer.Context,
        local: bool = typer.Option(False, "--local", help="A local install in this checkout."),
        system: bool = typer.Option(
            False, "--system", help="A system install (install.sh): /etc/wapp, /var/lib/wapp."
        ),
        port: int = typer.Option(8080, help="API port written into a new config."),
        data_dir: Path = typer.Option(
            Path("/var/lib/wapp"), "--data-dir", help="--system: the data dir written."
        ),
        sandbox: bool = typer.Option(
            False, "--sandbox", help="--system: a new config enables the bundled simulator."
        ),
        owner: str | None = typer.Option(
            None, "--owner", help="--system: the service user owning data dir and master key."
        ),
    ) -> None:
        """Create the config file and the master key (0600) when missing; never overwrite.
        --system also adds the fields a system install needs that an older file lacks."""
        if local == system:
            raise UsageError("say which install: `wapp init --local` or `wapp init --system`")
        out = Console()
        if local:
            config_path = state(ctx).config_path or Path("config.toml").resolve()
            result = init_local(config_path, data_dir=config_path.parent / "data", port=port)
        else:
            env = os.environ.get("WAPP_CONFIG")
            config_path = state(ctx).config_path or (Path(env) if env else SYSTEM_CONFIG)
            result = init_system(
                config_path, data_dir=data_dir, port=port, sandbox=sandbox, owner=owner
            )
            for name in result.added_fields:
                out.print(f"added {name} to {config_path}")
        verb = "wrote" if result.config_created else "kept"
        out.print(f"{verb} {result.config_path}")
        verb = "generated" if result.master_key_created else "kept"
        out.print(f"{verb} master key {result.master_key_path}")
