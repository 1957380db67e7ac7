"""`wapp init --local`: what a checkout needs to run as a local appliance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.security.master_key import create_master_key
from appliance.settings import load_settings

LOCAL_CONFIG_TEMPLATE = """\
# Written by `wapp init --local` (./install.sh). Every field, with its default, is in
# config.example.toml; values here override those defaults.

[general]
data_dir = "{data_dir}"

[api]
host = "127.0.0.1"
port = {port}

[sandbox]
# The bundled WhatsApp simulator: try wapp without a phone.
enabled = true
"""


@dataclass(frozen=True)
class InitResult:
    config_path: Path
    config_created: bool
    master_key_path: Path
    master_key_created: bool


def init_local(config_path: Path, *, data_dir: Path, port: int = 8080) -> InitResult:
    created = False
    if not config_path.exists():
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(LOCAL_CONFIG_TEMPLATE.format(data_dir=data_dir.resolve(), port=port))
        config_path.chmod(0o600)
        created = True
    settings = load_settings(config_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_created = create_master_key(settings.master_key_path)
    return InitResult(config_path, created, settings.master_key_path, key_created)
