from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance.cli import commands
from appliance.cli.main import app
from appliance.errors import ConfigError
from appliance.paths import REPO_DIR
from appliance.settings import Settings, load_settings

EXAMPLE = REPO_DIR / "config.example.toml"


def _commented_keys(text: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    section = ""
    for line in text.splitlines():
        if m := re.match(r"^\[(\w+)\]", line):
            section = m.group(1)
        elif m := re.match(r"^# (\w+) = ", line):
            found.setdefault(section, set()).add(m.group(1))
    return found


def test_the_example_config_documents_every_field_with_its_default() -> None:
    text = EXAMPLE.read_text()
    example = tomllib.loads(text)
    commented = _commented_keys(text)
    defaults = Settings()
    assert set(example) == set(Settings.model_fields)
    for section_name in Settings.model_fields:
        section = getattr(defaults, section_name)
        for field_name in type(section).model_fields:
            default = getattr(section, field_name)
            if default is None:
                assert field_name in commented.get(section_name, set()), (
                    f"[{section_name}] {field_name} (unset by default) needs a commented example"
                )
                assert field_name not in example[section_name]
            else:
                assert field_name in example[section_name], f"[{section_name}] {field_name} missing"
    # Values equal the defaults once parsed through the same model.
    assert Settings(**example) == defaults


def test_env_vars_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[api]\nport = 9000\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("WAPP_API__PORT", "9100")
    settings = load_settings(cfg)
    assert settings.api.port == 9100
    assert settings.api.host == "0.0.0.0"


def test_the_smtp_password_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "smtp"
    secret.write_text("s3cret\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[webhooks]\nsmtp_password_file = "{secret}"\n')
    assert load_settings(cfg).webhooks.smtp_password == "s3cret"
    cfg.write_text(f'[webhooks]\nsmtp_password = "x"\nsmtp_password_file = "{secret}"\n')
    with pytest.raises(ConfigError, match="not both"):
        load_settings(cfg)


def test_a_secret_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text("postgresql+asyncpg://u:p@127.0.0.1/x\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[database]\nurl_file = "{secret}"\n')
    assert load_settings(cfg).database_url == "postgresql+asyncpg://u:p@127.0.0.1/x"


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ('[api]\nport = "eighty"\n', "api.port"),
        ("[api]\nport = 70000\n", "api.port"),
        ("[bogus]\nx = 1\n", "bogus"),
        ('[database]\nurl = "mysql://x"\n', "database"),
        ("[redis]\nmanaged = false\n", "redis"),
        ("[pacing]\nmin_interval_s = 9.0\nmax_interval_s = 1.0\n", "pacing"),
        ('[database]\nurl_file = "/nonexistent/secret"\n', "database"),
    ],
)
def test_invalid_config_names_the_field_and_the_file(tmp_path: Path, toml: str, field: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert info.value.details["field"] == field
    assert str(cfg) in info.value.message


def test_unparseable_toml_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[api\nport=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg)


def test_an_explicit_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")


def test_the_cli_exits_3_on_invalid_config_naming_field_and_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[api]\nport = 0\n")
    wapp = Path(sys.executable).parent / "wapp"
    result = subprocess.run(
        [str(wapp), "--config", str(cfg), "config", "check"], capture_output=True, text=True
    )
    assert result.returncode == 3
    assert "api.port" in result.stderr
    assert str(cfg) in result.stderr.replace("\n", "")


def test_the_cli_exits_2_on_usage_errors() -> None:
    wapp = Path(sys.executable).parent / "wapp"
    result = subprocess.run([str(wapp), "no-such-command"], capture_output=True, text=True)
    assert result.returncode == 2


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\nurl = "postgresql+asyncpg://u:hunter2@h/db"\n')
    commands.register(app)
    result = CliRunner().invoke(app, ["--config", str(cfg), "config", "show"])
    assert result.exit_code == 0
    assert "hunter2" not in result.output
    assert '"url": "***"' in result.output


def test_derived_paths_live_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(general={"data_dir": str(tmp_path)})  # type: ignore[arg-type]
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'wapp.db'}"
    assert settings.redis_url == f"unix://{tmp_path / 'redis' / 'redis.sock'}"
    assert settings.master_key_path == tmp_path / "master.key"


def test_an_error_message_with_markup_characters_is_printed_verbatim(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[api]\nhost = "[/red]"\nport = "x[/b]"\n')
    wapp = Path(sys.executable).parent / "wapp"
    result = subprocess.run(
        [str(wapp), "--config", str(cfg), "config", "check"], capture_output=True, text=True
    )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr


def test_every_section_of_the_file_is_read_and_settings_alone_read_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[api]\nport = 9001\n[pacing]\nmin_interval_s = 1.0\nmax_interval_s = 2.0\n")
    settings = load_settings(cfg)
    assert (settings.api.port, settings.pacing.max_interval_s) == (9001, 2.0)
    monkeypatch.chdir(tmp_path)  # a ./config.toml is there, but only load_settings looks
    assert Settings().api.port == Settings.model_fields["api"].default.port


def test_a_named_config_that_is_gone_is_a_config_error_without_the_search(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_settings(tmp_path / "gone.toml", search=False)
    assert info.value.details["file"] == str(tmp_path / "gone.toml")
