from __future__ import annotations

import base64
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.errors import ConfigError
from appliance.local_install import init_local
from appliance.security.master_key import create_master_key, load_master_key
from appliance.settings import load_settings

WAPP = Path(sys.executable).parent / "wapp"


def test_init_local_writes_a_valid_config_and_a_private_master_key(tmp_path: Path) -> None:
    result = init_local(tmp_path / "config.toml", data_dir=tmp_path / "data")
    assert result.config_created
    assert result.master_key_created
    settings = load_settings(result.config_path)
    assert settings.data_dir == (tmp_path / "data").resolve()
    assert settings.sandbox.enabled
    mode = stat.S_IMODE(result.master_key_path.stat().st_mode)
    assert mode == 0o600
    assert len(load_master_key(result.master_key_path)) == 32


def test_init_local_twice_changes_nothing(tmp_path: Path) -> None:
    first = init_local(tmp_path / "config.toml", data_dir=tmp_path / "data")
    config = first.config_path.read_bytes()
    key = first.master_key_path.read_bytes()
    second = init_local(tmp_path / "config.toml", data_dir=tmp_path / "data")
    assert not second.config_created
    assert not second.master_key_created
    assert first.config_path.read_bytes() == config
    assert first.master_key_path.read_bytes() == key


def test_a_master_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    assert create_master_key(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="owner only"):
        load_master_key(path)


def test_a_master_key_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(base64.b64encode(b"short"))
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="32 bytes"):
        load_master_key(path)


def test_wapp_init_without_local_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(WAPP), "--config", str(tmp_path / "c.toml"), "init"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert not (tmp_path / "c.toml").exists()


def test_wapp_init_local_via_the_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    result = subprocess.run(
        [str(WAPP), "--config", str(cfg), "init", "--local"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    assert load_settings(cfg).master_key_path.is_file()
