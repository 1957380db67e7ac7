"""Every command group of `wapp`, registered in one place."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from appliance.cli import config_cmd, contracts_cmd

    config_cmd.register(app)
    contracts_cmd.register(app)
