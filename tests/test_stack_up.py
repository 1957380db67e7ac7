# ruff: noqa: F811  (the receiver fixture imported from test_webhooks_support)
"""A real stack: `wapp up -d`, every program RUNNING, a killed engine healed and alerted
to the admin, `wapp down`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar, cast

import httpx
import psutil
import redis

from appliance.contracts import EngineHeartbeat
from appliance.redis_keys import engine_heartbeat_key
from appliance.settings import load_settings
from appliance.stack.layout import StackLayout
from appliance.stack.programs import program_names
from appliance.stack.rpc import StackStatus, Supervisor, connect
from tests.fixtures.stack import StackDir, start_stack
from tests.fixtures.waiting import wait_for
from tests.fixtures.webhooks import Receiver, receiver  # noqa: F401  (fixture)

T = TypeVar("T")


def _programs(stack: StackDir) -> list[str]:
    # Whatever the stack's settings run (a watchdog too, when it is on).
    return program_names(load_settings(stack.config))


@contextmanager
def _supervisor(stack: StackDir) -> Iterator[Supervisor]:
    supervisor = connect(StackLayout.of(load_settings(stack.config)))
    assert supervisor is not None
    with supervisor:
        yield supervisor


def _pid(status: StackStatus, name: str) -> int:
    (program,) = [p for p in status.programs if p.name == name]
    assert program.pid is not None
    return program.pid


def _engine_restarted(supervisor: Supervisor, old_pid: int) -> Callable[[], int | None]:
    def probe() -> int | None:
        status = supervisor.status()
        (engine,) = [p for p in status.programs if p.name == "engine"]
        return engine.pid if engine.running and engine.pid not in (None, old_pid) else None

    return probe


def test_a_killed_engine_is_restarted_alerted_readyz_recovers_and_down_leaves_no_process(
    stack_dir: StackDir, receiver: Receiver
) -> None:
    """Supervisor heals a SIGKILLed engine and /readyz follows;
    the api sees the new engine's heartbeat and sends the `engine.recycled` admin alert."""
    with stack_dir.config.open("a", encoding="utf-8") as config:
        config.write(f'[webhooks]\nalert_webhook_url = "{receiver.url}"\n')
    running_stack = start_stack(stack_dir)
    listed = running_stack.wapp("status")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for name in _programs(running_stack):
        assert name in listed.stdout

    ready_url = f"http://127.0.0.1:{running_stack.api_port}/readyz"
    settings = load_settings(running_stack.config)
    store = redis.Redis(unix_socket_path=str(settings.redis_socket_path))

    def heartbeat_pid() -> int | None:
        raw = cast("bytes | None", store.get(engine_heartbeat_key("whatsapp")))
        return None if raw is None else EngineHeartbeat.model_validate_json(raw).pid

    def readyz() -> int:
        try:
            return httpx.get(ready_url, timeout=2).status_code
        except httpx.TransportError:
            return 0

    with _supervisor(running_stack) as supervisor, store:
        before = supervisor.status()
        assert sorted(p.name for p in before.programs) == sorted(_programs(running_stack))
        assert all(p.state == "RUNNING" and p.rss_bytes for p in before.programs)
        wait_for(
            "/readyz 200",
            lambda: readyz() == 200 or None,
            timeout=15,
            ok=lambda found: found is not None,
        )
        engine_pid = _pid(before, "engine")
        assert heartbeat_pid() == engine_pid
        # The api's monitor polls every heartbeat interval (0.5 s): let it see this engine.
        time.sleep(1.5)

        os.kill(engine_pid, signal.SIGKILL)
        new_engine = wait_for(
            "engine restarted",
            _engine_restarted(supervisor, engine_pid),
            timeout=20,
            ok=lambda found: found is not None,
        )
        # Ready again, and on the strength of the new engine's heartbeat, not the dead one's.
        wait_for(
            "/readyz 200 with the new engine's heartbeat",
            lambda: (heartbeat_pid() == new_engine and readyz() == 200) or None,
            timeout=20,
            ok=lambda found: found is not None,
        )
        assert supervisor.status().healthy
        wait_for(
            "an admin alert",
            lambda: receiver.received or None,
            timeout=20,
            ok=lambda found: found is not None,
        )
    [alert] = [r.json for r in receiver.received]
    assert alert["type"] == "alert.engine.recycled"
    assert alert["message"] == f"engine (whatsapp) restarted: pid {engine_pid} -> {new_engine}"
    assert alert["details"]["oldRssMb"] > 0
    again = running_stack.wapp("up", "-d")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout

    pids = [before.supervisord_pid, new_engine, *(p.pid for p in before.programs if p.pid)]
    down = running_stack.wapp("down")
    assert down.returncode == 0, down.stderr
    assert [pid for pid in pids if psutil.pid_exists(pid) and pid != engine_pid] == []
    assert running_stack.processes() == []


def test_up_in_the_foreground_becomes_supervisord_and_stops_everything_on_sigterm(
    stack_dir: StackDir,
) -> None:
    proc = subprocess.Popen(
        stack_dir.argv("up"),
        cwd=stack_dir.root,
        env=stack_dir.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        layout = StackLayout.of(load_settings(stack_dir.config))

        def all_running() -> StackStatus | None:
            supervisor = connect(layout)
            if supervisor is None:
                return None
            with supervisor:
                status = supervisor.status()
            return (
                status
                if status.healthy and len(status.programs) == len(_programs(stack_dir))
                else None
            )

        status = wait_for(
            "every program RUNNING", all_running, timeout=30, ok=lambda found: found is not None
        )
        # exec'd: systemd's or a terminal's signals reach supervisord itself.
        assert status.supervisord_pid == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert stack_dir.processes() == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_up_detached_names_the_program_that_cannot_start_and_leaves_nothing_running(
    stack_dir: StackDir,
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack_dir.api_port))
        squatter.listen()
        # Without the sandbox: fewer programs to stop again, same failure.
        result = stack_dir.wapp(
            "up", "-d", "--timeout", "40", env={"WAPP_SANDBOX__ENABLED": "false"}
        )
    assert result.returncode == 1
    assert "api" in result.stderr.splitlines()[0]
    # The tail of the api's own log says why.
    assert "address already in use" in result.stderr
    assert not stack_dir.supervisor_socket.exists()
    assert stack_dir.processes() == []
