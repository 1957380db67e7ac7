from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from appliance.cli import commands
from appliance.cli.main import app

WAPP = Path(sys.executable).parent / "wapp"


def _command_paths() -> list[list[str]]:
    commands.register(app)
    click_app = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(group: object, prefix: list[str]) -> None:
        for name, sub in getattr(group, "commands", {}).items():
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(click_app, [])
    return paths


def test_wapp_help_lists_every_command_group() -> None:
    result = subprocess.run([str(WAPP), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for name in (
        "init",
        "up",
        "down",
        "status",
        "logs",
        "api",
        "engine",
        "config",
        "contracts",
        "keys",
        "db",
        "webhooks",
    ):
        assert name in result.stdout


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p))
def test_every_command_has_working_help(path: list[str]) -> None:
    # In-process: the console script itself is covered above and in the other CLI tests.
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
