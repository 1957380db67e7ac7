"""What every CLI command shares: the --config path, and Settings built once from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from appliance.errors import ConfigError
from appliance.settings import Settings, load_settings


@dataclass
class CliState:
    config_path: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def settings(ctx: typer.Context) -> Settings:
    return state(ctx).settings()


def running_settings(ctx: typer.Context) -> tuple[Settings, ConfigError | None]:
    """The settings from the file; when the file is broken, those the running stack was
    started with (from its run dir) and the file's error, so that `down`, `status` and
    `logs` still reach the stack. Without a running stack's copy the error stands."""
    try:
        return settings(ctx), None
    except ConfigError as exc:
        from appliance.stack.recover import running_settings as from_run_dir

        fallback = from_run_dir(state(ctx).config_path)
        if fallback is None:
            raise
        return fallback, exc
