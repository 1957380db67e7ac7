"""Every command group of `wapp`, registered in one place."""

from __future__ import annotations

import typer

_registered: set[int] = set()


def register(app: typer.Typer) -> None:
    # Idempotent: `run()` and tests may both ask for the full command tree.
    if id(app) in _registered:
        return
    _registered.add(id(app))
    from appliance.cli import (
        api_cmd,
        config_cmd,
        contracts_cmd,
        db_cmd,
        engine_cmd,
        init_cmd,
        keys_cmd,
        stack_cmd,
        watchdog_cmd,
        webhooks_cmd,
    )

    config_cmd.register(app)
    contracts_cmd.register(app)
    init_cmd.register(app)
    keys_cmd.register(app)
    db_cmd.register(app)
    stack_cmd.register(app)
    api_cmd.register(app)
    engine_cmd.register(app)
    webhooks_cmd.register(app)

    from appliance.service import cli as service_cli

    service_cli.register(app)
    watchdog_cmd.register(app)

    from appliance.cli import demo_cmd, doctor_cmd, messages_cmd, send_cmd, sessions_cmd

    sessions_cmd.register(app)
    send_cmd.register(app)
    messages_cmd.register(app)
    doctor_cmd.register(app)
    demo_cmd.register(app)

    from appliance.cli import backup_cmd

    backup_cmd.register(app)
