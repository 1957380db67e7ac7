"""What `wapp up` writes: supervisord's and redis-server's configs, checked by supervisor itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from supervisor.datatypes import RestartUnconditionally
from supervisor.options import ServerOptions

from appliance.errors import ConfigError
from appliance.settings import Settings
from appliance.stack.programs import find_tools, program_names, programs
from appliance.stack.render import write_configs
from tests.fixtures.settings import MakeSettings


def _parsed(conf: Path) -> dict[str, Any]:
    """The programs as supervisord itself reads the file: name -> process config."""
    options = ServerOptions()
    options.realize(args=["-c", str(conf)])
    return {group.name: group.process_configs[0] for group in options.process_group_configs}


def _render(settings: Settings, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    config = tmp_path / "config.toml"
    config.write_text("", encoding="utf-8")
    layout = write_configs(settings, find_tools(settings), config_path=config, workdir=tmp_path)
    return layout.supervisord_conf, _parsed(layout.supervisord_conf)


def test_managed_redis_starts_first_and_every_program_is_supervised(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(redis={"managed": True, "url": None})
    _, parsed = _render(settings, tmp_path)
    assert sorted(parsed) == ["api", "engine", "redis", "watchdog"]
    assert min(parsed.values(), key=lambda p: p.priority).name == "redis"
    for program in parsed.values():
        assert program.autorestart is RestartUnconditionally
        assert program.stopasgroup
        assert program.killasgroup
        assert Path(program.stdout_logfile).parent == settings.data_dir / "logs"
        assert program.stdout_logfile_maxbytes > 0
        assert program.stdout_logfile_backups > 0
    # The engine drains for 10 s on SIGTERM; supervisord must not SIGKILL it before.
    assert parsed["engine"].stopwaitsecs > 10
    assert parsed["engine"].command.endswith("engine --upstream whatsapp")
    assert parsed["api"].command.endswith(" api")


def test_every_wapp_program_reads_the_run_dirs_copy_of_the_config_file(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(sandbox={"enabled": True})
    _, parsed = _render(settings, tmp_path)
    applied = settings.run_dir / "config.toml"
    # A copy: an edit of the operator's file changes nothing until `wapp reload`.
    assert applied.read_bytes() == (tmp_path / "config.toml").read_bytes()
    for name in ("api", "engine", "engine-sandbox"):
        assert f"--config {applied} " in parsed[name].command


def test_a_programs_section_changes_exactly_when_the_settings_it_reads_change(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    sandbox = {"enabled": True}
    redis: dict[str, Any] = {"managed": True, "url": None}
    _, before = _render(make_settings(redis=redis, sandbox=sandbox), tmp_path)
    _, port = _render(make_settings(redis=redis, sandbox=sandbox, api={"port": 9999}), tmp_path)
    _, beat = _render(
        make_settings(redis=redis, sandbox=sandbox, engine={"heartbeat_ttl_s": 30}), tmp_path
    )
    _, memory = _render(
        make_settings(redis={**redis, "maxmemory_mb": 64}, sandbox=sandbox), tmp_path
    )

    def changed(after: dict[str, Any]) -> list[str]:
        return sorted(n for n in before if before[n].environment != after[n].environment)

    assert changed(port) == ["api", "watchdog"]
    assert changed(beat) == ["api", "engine", "engine-sandbox", "watchdog"]
    assert changed(memory) == ["api", "redis", "watchdog"]


def test_external_redis_means_no_redis_program_and_no_redis_conf(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings()  # the test Redis, managed = false
    _, parsed = _render(settings, tmp_path)
    assert "redis" not in parsed
    assert not (settings.data_dir / "redis" / "redis.conf").exists()


def test_sandbox_adds_the_simulator_and_a_second_engine(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(sandbox={"enabled": True, "port": 9101, "control_port": 9102})
    _, parsed = _render(settings, tmp_path)
    assert sorted(parsed) == sorted(program_names(settings))
    assert parsed["engine-sandbox"].command.endswith("engine --upstream sandbox")
    sim = parsed["sim"].command
    assert "dist/sim/main.js --port 9101 --control-port 9102" in sim
    assert f"--data-dir {settings.sandbox_data_dir}" in sim
    assert parsed["sim"].priority < parsed["engine-sandbox"].priority


def test_without_sandbox_there_is_no_simulator(make_settings: MakeSettings) -> None:
    assert program_names(make_settings()) == ["engine", "api", "watchdog"]
    assert program_names(make_settings(redis={"managed": True, "url": None})) == [
        "redis",
        "engine",
        "api",
        "watchdog",
    ]


def test_redis_conf_is_aof_everysec_on_a_private_socket_in_the_data_dir(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(redis={"managed": True, "url": None, "maxmemory_mb": 64})
    _render(settings, tmp_path)
    conf = settings.data_dir / "redis" / "redis.conf"
    lines = conf.read_text(encoding="utf-8").splitlines()
    for expected in (
        "port 0",
        f"unixsocket {settings.redis_socket_path}",
        "unixsocketperm 700",
        "appendonly yes",
        "appendfsync everysec",
        f"dir {settings.data_dir / 'redis'}",
        "maxmemory 64mb",
        "daemonize no",
    ):
        assert expected in lines
    assert settings.redis_socket_path.is_relative_to(settings.data_dir)


def test_supervisor_socket_pidfile_and_logs_live_in_the_data_dir(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings()
    conf, _ = _render(settings, tmp_path)
    options = ServerOptions()
    options.realize(args=["-c", str(conf)])
    data = settings.data_dir
    assert conf == data / "run" / "supervisord.conf"
    assert options.server_configs[0]["file"] == str(data / "run" / "supervisor.sock")
    assert options.server_configs[0]["chmod"] == 0o700
    assert options.pidfile == str(data / "run" / "supervisord.pid")
    assert options.logfile == str(data / "logs" / "supervisord.log")
    assert (data / "run").stat().st_mode & 0o777 == 0o700


def test_a_percent_sign_in_the_data_dir_is_a_config_error_not_a_broken_supervisord(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(general={"data_dir": str(tmp_path / "100%data")})
    with pytest.raises(ConfigError, match=r"general\.data_dir"):
        _render(settings, tmp_path)


def test_a_data_dir_too_long_for_a_unix_socket_is_a_config_error(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(general={"data_dir": str(tmp_path / ("d" * 120))})
    with pytest.raises(ConfigError, match=r"general\.data_dir"):
        _render(settings, tmp_path)


def test_every_program_command_names_an_absolute_executable(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(redis={"managed": True, "url": None}, sandbox={"enabled": True})
    tools = find_tools(settings)
    conf = settings.data_dir / "redis" / "redis.conf"
    for program in programs(settings, tools, redis_conf=conf, config_path=None):
        assert Path(program.command[0]).is_absolute()
        assert Path(program.command[0]).exists()
        assert "--config" not in program.command
