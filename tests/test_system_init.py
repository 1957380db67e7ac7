"""`wapp init --system`: the config a system install needs, added to and never rewritten."""

from __future__ import annotations

import stat
import subprocess
import sys
import tomllib
from pathlib import Path

from appliance.local_install import add_missing_fields, init_system
from appliance.settings import load_settings

WAPP = Path(sys.executable).parent / "wapp"


def test_init_system_writes_a_stdout_config_a_private_data_dir_and_master_key(
    tmp_path: Path,
) -> None:
    config = tmp_path / "etc" / "config.toml"
    result = init_system(config, data_dir=tmp_path / "data", port=8181, sandbox=True)
    assert result.config_created
    assert result.master_key_created
    settings = load_settings(config, search=False)
    assert settings.general.log_target == "stdout"
    assert settings.data_dir == (tmp_path / "data").resolve()
    assert settings.api.port == 8181
    assert settings.sandbox.enabled
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert stat.S_IMODE(result.master_key_path.stat().st_mode) == 0o600


def test_a_second_run_changes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    first = init_system(config, data_dir=tmp_path / "data")
    before = (config.read_bytes(), first.master_key_path.read_bytes())
    second = init_system(config, data_dir=tmp_path / "other", port=9999, sandbox=True)
    assert not second.config_created
    assert not second.master_key_created
    assert second.added_fields == ()
    assert (config.read_bytes(), first.master_key_path.read_bytes()) == before


def test_an_upgrade_adds_missing_fields_and_keeps_every_existing_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    old = (
        "# my notes\n[general]\n"
        f'data_dir = "{tmp_path / "data"}"\nlog_level = "debug"\n\n'
        '[api]\nport = 9000\nhost = "0.0.0.0"\n\n[pacing]\nenabled = false\n'
    )
    config.write_text(old)
    result = init_system(config, data_dir=tmp_path / "ignored", port=8080)
    assert set(result.added_fields) == {"general.log_target", "sandbox.enabled"}
    text = config.read_text()
    assert all(line in text.splitlines() for line in old.splitlines())
    parsed = tomllib.loads(text)
    assert parsed["api"] == {"port": 9000, "host": "0.0.0.0"}
    assert parsed["general"]["log_target"] == "stdout"
    assert parsed["general"]["log_level"] == "debug"


def test_add_missing_fields_puts_a_field_under_its_own_section() -> None:
    text, added = add_missing_fields("[api]\nport = 1\n\n[redis]\n", {"redis": {"x": 'a"b'}})
    assert added == ["redis.x"]
    assert tomllib.loads(text) == {"api": {"port": 1}, "redis": {"x": 'a"b'}}


def test_wapp_init_needs_exactly_one_mode(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    both = subprocess.run(
        [str(WAPP), "--config", str(cfg), "init", "--local", "--system"],
        capture_output=True,
        text=True,
    )
    assert both.returncode == 2
    ok = subprocess.run(
        [str(WAPP), "--config", str(cfg), "init", "--system", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert load_settings(cfg, search=False).master_key_path.is_file()
