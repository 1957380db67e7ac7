"""`wapp logs|status|down|engine` against no running stack: exit codes and messages."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from appliance.errors import CommandFailed
from appliance.stack import logs
from appliance.stack.engine_process import CONFIG_ENV, engine_argv, exec_engine, runtime_config
from tests.fixtures.settings import MakeSettings
from tests.fixtures.stack import StackDir


def test_logs_of_an_unknown_program_exits_2_listing_the_valid_names(stack_dir: StackDir) -> None:
    result = stack_dir.wapp("logs", "nosuch")
    assert result.returncode == 2
    assert "nosuch" in result.stderr
    for name in ("redis", "api", "engine", "supervisord"):
        assert name in result.stderr


def test_up_without_a_master_key_exits_3_before_starting_anything(stack_dir: StackDir) -> None:
    (stack_dir.data_dir / "master.key").unlink()
    result = stack_dir.wapp("up", "-d")
    assert result.returncode == 3
    assert "security.master_key_file" in result.stderr
    assert "wapp init" in result.stderr
    assert not stack_dir.supervisor_socket.exists()


def test_status_when_the_stack_is_down_exits_1(stack_dir: StackDir) -> None:
    result = stack_dir.wapp("status")
    assert result.returncode == 1
    assert "not running" in result.stderr


def test_status_json_when_down_says_so_and_exits_1(stack_dir: StackDir) -> None:
    result = stack_dir.wapp("status", "--json")
    assert result.returncode == 1
    assert '"running": false' in result.stdout


def test_down_when_nothing_runs_says_so_and_exits_0(stack_dir: StackDir) -> None:
    result = stack_dir.wapp("down")
    assert result.returncode == 0, result.stderr
    assert "not running" in result.stdout


def test_engine_refuses_a_system_node_older_than_24_naming_the_field(
    stack_dir: StackDir,
) -> None:
    if not Path("/usr/bin/node").exists():
        pytest.fail("this test needs the system's Node 20 at /usr/bin/node")
    result = stack_dir.wapp("engine", env={"WAPP_ENGINE__NODE_PATH": "/usr/bin/node"})
    assert result.returncode == 3
    assert "engine.node_path" in result.stderr


def test_engine_with_an_unknown_upstream_is_a_usage_error(stack_dir: StackDir) -> None:
    assert stack_dir.wapp("engine", "--upstream", "telegram").returncode == 2


def test_an_unbuilt_engine_is_a_clear_failure(make_settings: MakeSettings, tmp_path: Path) -> None:
    with pytest.raises(CommandFailed, match="npm run build"):
        exec_engine(make_settings(), "whatsapp", main=tmp_path / "missing" / "main.js")


def test_the_engine_gets_its_whole_runtime_config_from_settings(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(
        general={"log_level": "debug"},
        engine={"heartbeat_interval_s": 2, "heartbeat_ttl_s": 7, "max_old_space_size_mb": 300},
        security={"master_key_file": str(tmp_path / "k")},
    )
    config = runtime_config(settings, "sandbox")
    assert config.upstream == "sandbox"
    assert config.redis_url == settings.redis_url
    assert config.log_level == "debug"
    assert config.data_dir == str(settings.data_dir)
    assert config.master_key_file == str(tmp_path / "k")
    assert (config.heartbeat_interval_s, config.heartbeat_ttl_s) == (2, 7)
    argv = engine_argv(settings, Path("/n/node"), Path("/e/main.js"))
    assert argv == ["/n/node", "--max-old-space-size=300", "/e/main.js"]
    assert CONFIG_ENV == "WAPP_ENGINE_CONFIG"


def test_logs_prints_the_last_lines_of_a_program(stack_dir: StackDir) -> None:
    log = stack_dir.data_dir / "logs" / "engine.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(100)), encoding="utf-8")
    result = stack_dir.wapp("logs", "engine", "-n", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["line 97", "line 98", "line 99"]


def test_follow_sees_appended_lines_across_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "api.log"
    log.write_text("old\n", encoding="utf-8")
    seen: list[str] = []
    done = threading.Event()

    def writer() -> None:
        time.sleep(0.1)
        with log.open("a", encoding="utf-8") as fh:
            fh.write("first\n")
        time.sleep(0.2)
        # supervisord rotates by renaming the file and opening a new one.
        log.rename(tmp_path / "api.log.1")
        log.write_text("second\n", encoding="utf-8")

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 5
    for _, line in logs.follow(
        {"api": log}, interval_s=0.02, stop=lambda: done.is_set() or time.monotonic() > deadline
    ):
        seen.append(line)
        if line == "second":
            done.set()
    thread.join()
    assert seen == ["first", "second"]
