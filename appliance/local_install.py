"""`wapp init --local` and `wapp init --system`: the config file and the master key.

Both never overwrite: a config file that exists is kept (the system variant only adds the
fields it needs and the file lacks), a master key that exists is kept.
"""

from __future__ import annotations

import grp
import os
import pwd
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from appliance.paths import secure_data_dir
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

SYSTEM_CONFIG_HEADER = """\
# Written by `wapp init --system` (install.sh). Every field, with its default, is in
# /opt/wapp/config.example.toml; values here override those defaults. After an edit:
# `systemctl reload wapp`.
"""

# root writes it, the service's group reads it.
CONFIG_MODE = 0o640


@dataclass(frozen=True)
class InitResult:
    config_path: Path
    config_created: bool
    master_key_path: Path
    master_key_created: bool
    added_fields: tuple[str, ...] = field(default=())


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


def system_fields(data_dir: Path, port: int, sandbox: bool) -> dict[str, dict[str, object]]:
    # What a system install needs in its file; an upgrade adds the ones an older file
    # lacks (log_target came with the VPS mode) and never touches a value that is there.
    return {
        "general": {"data_dir": str(data_dir), "log_target": "stdout"},
        "api": {"host": "127.0.0.1", "port": port},
        "sandbox": {"enabled": sandbox},
    }


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def add_missing_fields(text: str, wanted: dict[str, dict[str, object]]) -> tuple[str, list[str]]:
    """`text` with every wanted `[section] key` it lacks added: a line right under the
    section's header, or a new section at the end. Lines already there stay as they are."""
    present = tomllib.loads(text)
    lines = text.splitlines()
    added: list[str] = []
    for section, values in wanted.items():
        have = present.get(section, {})
        missing = [(k, v) for k, v in values.items() if k not in have]
        if not missing:
            continue
        new = [f"{key} = {_toml_value(value)}" for key, value in missing]
        added += [f"{section}.{key}" for key, _ in missing]
        header = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
        if header is None:
            lines += ["", f"[{section}]", *new]
        else:
            lines[header + 1 : header + 1] = new
    return "\n".join(lines) + "\n", added


def init_system(
    config_path: Path,
    *,
    data_dir: Path,
    port: int = 8080,
    sandbox: bool = False,
    owner: str | None = None,
) -> InitResult:
    """The config file (0640 root:<owner's group>) with the fields a system install needs,
    the data dir (0700) and the master key (0600), both owned by `owner` when given."""
    wanted = system_fields(data_dir, port, sandbox)
    created = not config_path.exists()
    text = SYSTEM_CONFIG_HEADER if created else config_path.read_text(encoding="utf-8")
    updated, added = add_missing_fields(text, wanted)
    if updated != text:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = config_path.with_name(config_path.name + ".tmp")
        tmp.write_text(updated, encoding="utf-8")
        tmp.chmod(CONFIG_MODE)
        tmp.replace(config_path)
    uid = gid = -1
    if owner is not None:
        uid = pwd.getpwnam(owner).pw_uid
        gid = grp.getgrnam(owner).gr_gid
        # The service reads its config, never writes it.
        os.chown(config_path, 0, gid)
        config_path.chmod(CONFIG_MODE)
    settings = load_settings(config_path, search=False)
    secure_data_dir(settings.data_dir)
    key_created = create_master_key(settings.master_key_path)
    if owner is not None:
        os.chown(settings.data_dir, uid, gid)
        os.chown(settings.master_key_path, uid, gid)
    return InitResult(
        config_path,
        created,
        settings.master_key_path,
        key_created,
        tuple(added if not created else ()),
    )
