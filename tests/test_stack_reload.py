"""A running stack and a changed or broken config file:
`wapp status` says the settings differ, `wapp up -d` points to `wapp reload`, which
restarts only what changed; `wapp restart`; `down`/`status`/`logs` on a broken file."""

from __future__ import annotations

import os
import signal
from typing import Any, TypeVar

import httpx
import orjson

from tests.fixtures.stack import StackDir, free_port
from tests.fixtures.waiting import wait_for

T = TypeVar("T")
# Programs that do not read the api's settings: a new api port must not restart them.
UNTOUCHED = ("redis", "sim", "engine", "engine-sandbox")


def _status(stack: StackDir, *, healthy: bool = True) -> dict[str, Any]:
    result = stack.wapp("status", "--json")
    if healthy:
        assert result.returncode == 0, result.stdout + result.stderr
    body: dict[str, Any] = orjson.loads(result.stdout)
    return body


def _pids(stack: StackDir, *, healthy: bool = True) -> dict[str, int | None]:
    return {p["name"]: p["pid"] for p in _status(stack, healthy=healthy)["programs"]}


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_changed_config_is_reported_kept_out_until_reload_and_reload_restarts_only_it(
    running_stack: StackDir,
) -> None:
    stack = running_stack
    assert _status(stack)["settings_differ"] == []
    before = _pids(stack)
    # A setting only the api reads: its port.
    new_port = free_port()
    text = stack.config.read_text(encoding="utf-8")
    stack.config.write_text(
        text.replace(f"port = {stack.api_port}\n", f"port = {new_port}\n", 1), encoding="utf-8"
    )

    differ = _status(stack)["settings_differ"]
    assert "api" in differ
    # Only `wapp` programs reading every setting (the api, a watchdog) change, not these.
    assert not set(differ) & set(UNTOUCHED)
    table = stack.wapp("status")
    assert table.returncode == 0, table.stderr
    assert "differ" in table.stdout
    assert "wapp reload" in table.stdout
    again = stack.wapp("up", "-d")
    assert again.returncode == 1
    assert "api (changed)" in again.stderr
    assert "wapp reload" in again.stderr

    # A crash-restart runs with the settings the stack was started with, not the edit.
    os.kill(before["api"], signal.SIGKILL)
    wait_for(
        "the api restarted on its old port",
        lambda: (
            (
                _pids(stack, healthy=False)["api"] not in (None, before["api"])
                and _answers(stack.api_port)
            )
            or None
        ),
        timeout=30,
        ok=lambda found: found is not None,
    )
    assert not _answers(new_port)
    restarted_api = _pids(stack)["api"]

    reloaded = stack.wapp("reload")
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    assert "api (changed)" in reloaded.stdout
    after = _pids(stack)
    assert after["api"] != restarted_api
    assert {n: after[n] for n in UNTOUCHED} == {n: before[n] for n in UNTOUCHED}
    assert _answers(new_port)
    assert not _answers(stack.api_port)
    assert _status(stack)["settings_differ"] == []
    # Nothing changed since: a second reload restarts nothing.
    second = stack.wapp("reload")
    assert second.returncode == 0, second.stderr
    assert "no program's settings changed" in second.stdout
    assert _pids(stack) == after


def test_restart_one_program_or_an_unknown_one(running_stack: StackDir) -> None:
    before = _pids(running_stack)
    result = running_stack.wapp("restart", "engine")
    assert result.returncode == 0, result.stdout + result.stderr
    after = _pids(running_stack)
    assert after["engine"] != before["engine"]
    assert {n: p for n, p in after.items() if n != "engine"} == {
        n: p for n, p in before.items() if n != "engine"
    }
    unknown = running_stack.wapp("restart", "nosuch")
    assert unknown.returncode == 2
    assert "engine-sandbox" in unknown.stderr


def test_a_broken_config_does_not_lock_the_operator_out(running_stack: StackDir) -> None:
    stack = running_stack
    good = stack.config.read_text(encoding="utf-8")
    # A value out of range: valid TOML, invalid settings.
    stack.config.write_text(good.replace("[api]\n", "[api]\nworkers = 0\n", 1), encoding="utf-8")
    status = stack.wapp("status")
    assert status.returncode == 0, status.stderr
    assert "warning" in status.stderr
    assert "api.workers" in status.stderr
    assert "RUNNING" in status.stdout
    assert stack.wapp("reload").returncode == 3

    # Not TOML at all any more; the data dir line is still there.
    stack.config.write_text(good + "[api\nport = \n", encoding="utf-8")
    logs = stack.wapp("logs", "api", "-n", "5")
    assert logs.returncode == 0, logs.stderr
    assert "not valid TOML" in logs.stderr
    assert logs.stdout.strip()
    for command in (("up", "-d"), ("restart",), ("keys", "list")):
        assert stack.wapp(*command).returncode == 3, command
    down = stack.wapp("down")
    assert down.returncode == 0, down.stderr
    assert "not valid TOML" in down.stderr
    assert "stopped supervisord" in down.stdout
    assert stack.processes() == []
