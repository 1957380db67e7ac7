"""The running stack's settings when the operator's config file cannot be read.

A broken edit of the file must not lock the operator out of the stack it runs: `wapp
down`, `status` and `logs` find the data dir as best they can (the environment, the
file's `[general] data_dir` even when the rest does not parse, the default), then read
the copy of the file the running stack was started with from its run dir.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from appliance.errors import ConfigError
from appliance.settings import (
    LOCAL_CONFIG,
    SYSTEM_CONFIG,
    GeneralSettings,
    Settings,
    load_settings,
)
from appliance.stack.layout import StackLayout

_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]\s*(#.*)?$")
_DATA_DIR = re.compile(r"""^\s*data_dir\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def _config_file(explicit: Path | None) -> Path | None:
    # As settings.resolve_config_path, without refusing a missing explicit file.
    chosen = explicit or (
        Path(os.environ["WAPP_CONFIG"]) if os.environ.get("WAPP_CONFIG") else None
    )
    if chosen is not None:
        return chosen
    return next((c for c in (SYSTEM_CONFIG, LOCAL_CONFIG) if c.is_file()), None)


def _data_dir_in(text: str) -> str | None:
    try:
        general = tomllib.loads(text).get("general", {})
        value = general.get("data_dir") if isinstance(general, dict) else None
        return value if isinstance(value, str) else None
    except tomllib.TOMLDecodeError:
        pass
    # Not TOML any more: the line under [general], as the operator wrote it.
    table = ""
    for line in text.splitlines():
        if found := _TABLE.match(line):
            table = found.group(1)
        elif table == "general" and (found := _DATA_DIR.match(line)):
            return found.group(1) if found.group(1) is not None else found.group(2)
    return None


def guess_data_dir(explicit: Path | None) -> Path:
    if value := os.environ.get("WAPP_GENERAL__DATA_DIR"):
        return Path(value).resolve()
    config = _config_file(explicit)
    if config is not None:
        try:
            found = _data_dir_in(config.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            found = None
        if found:
            return Path(found).resolve()
    return GeneralSettings().data_dir.resolve()


def running_settings(explicit: Path | None) -> Settings | None:
    """The settings of the stack running on the data dir the config file names, or None."""
    data_dir = guess_data_dir(explicit)
    applied = StackLayout(
        data_dir=data_dir,
        run_dir=data_dir / "run",
        logs_dir=data_dir / "logs",
        redis_dir=data_dir / "redis",
    ).applied_config
    if not applied.is_file():
        return None
    try:
        return load_settings(applied, search=False)
    except ConfigError:
        return None
