"""Every command group of `wapp`, registered in one place."""

from __future__ import annotations

import typer


_registered: set[int] = set()


def register(app: typer.Typer) -> None:
    # Idempotent: `run()` and tests may both ask for the full command tree.
    if id(app) in _registered:
        return
    _registered.add(id(app))
    from appliance.cli import config_cmd, contracts_cmd, init_cmd

    config_cmd.register(app)
    contracts_cmd.register(app)
    init_cmd.register(app)
