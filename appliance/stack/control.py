"""Starting and stopping supervisord: `wapp up` and `wapp down` without the printing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from appliance.errors import CommandFailed, ConfigError
from appliance.security.master_key import load_master_key
from appliance.settings import Settings
from appliance.stack.layout import StackLayout
from appliance.stack.logs import last_lines
from appliance.stack.programs import find_tools
from appliance.stack.render import write_configs
from appliance.stack.rpc import ProgramStatus, StackStatus, Supervisor, connect

# While `up -d` waits, a program that exited has failed. supervisord would retry it, but
# a stack that needs retries to come up is broken, and the user should see why now, not
# after the retries (BACKOFF -> FATAL) or never (one failing after startsecs loops).
_EXITED = {"BACKOFF", "EXITED", "FATAL", "STOPPED", "UNKNOWN"}
LOG_TAIL_LINES = 20


def check_master_key(settings: Settings) -> None:
    # Every engine and the api need it; missing, they would only restart in a loop.
    try:
        load_master_key(settings.master_key_path)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc.message}; `wapp init --local` creates one", details=exc.details
        ) from exc


def prepare(settings: Settings, *, config_path: Path | None, workdir: Path) -> StackLayout:
    """Check the master key, render the configs, create the data dir's folders, migrate.

    Only for a stack that is not running: the run dir's files are the running stack's.
    """
    check_master_key(settings)
    layout = write_configs(settings, find_tools(settings), config_path=config_path, workdir=workdir)
    # Imported here: alembic would cost every other `wapp` command a third of a second.
    from appliance.db.migrate import upgrade

    asyncio.run(upgrade(settings))
    return layout


def _argv(layout: StackLayout, *, foreground: bool) -> list[str]:
    argv = [sys.executable, "-m", "supervisor.supervisord", "-c", str(layout.supervisord_conf)]
    return [*argv, "-n"] if foreground else argv


def run_foreground(layout: StackLayout) -> None:
    """Replace this process with supervisord, so signals from a terminal or systemd reach it."""
    running = connect(layout)
    if running is not None:
        with running:
            pid = running.pid()
        raise CommandFailed(
            f"the stack is already running (supervisord pid {pid}); `wapp down` first"
        )
    argv = _argv(layout, foreground=True)
    os.execv(argv[0], argv)


def start_detached(
    layout: StackLayout, *, ready_url: str, timeout_s: float
) -> tuple[StackStatus, bool]:
    """Start supervisord in the background (unless it runs) and wait until the stack is ready.

    Returns the status and whether this call started supervisord. On failure the stack this
    call started is shut down again, so `wapp up -d` either leaves a running stack or none.
    """
    supervisor = connect(layout)
    started = supervisor is None
    if supervisor is None:
        proc = subprocess.run(
            _argv(layout, foreground=False), capture_output=True, text=True, timeout=60
        )
        supervisor = connect(layout)
        if proc.returncode != 0 or supervisor is None:
            output = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
            raise CommandFailed(f"supervisord did not start: {output}")
    with supervisor:
        try:
            return wait_ready(supervisor, ready_url=ready_url, timeout_s=timeout_s), started
        except CommandFailed:
            if started:
                stop(supervisor)
            raise


@dataclass(frozen=True)
class _Readiness:
    ready: bool
    detail: str
    # Programs whose logs explain it, from the failing checks' names.
    culprits: tuple[str, ...]


_CHECK_PROGRAM = {"redis": "redis", "engine.whatsapp": "engine", "engine.sandbox": "engine-sandbox"}


def _readiness(url: str) -> _Readiness:
    try:
        response = httpx.get(url, timeout=2.0)
    except httpx.HTTPError as exc:
        return _Readiness(False, f"the api does not answer ({type(exc).__name__})", ("api",))
    if response.status_code == 200:
        return _Readiness(True, "ready", ())
    try:
        checks = response.json()["error"]["details"]["checks"]
        failing = sorted(name for name, value in checks.items() if value != "ok")
        detail = ", ".join(f"{name}: {checks[name]}" for name in failing)
    except (ValueError, KeyError, TypeError, AttributeError):
        return _Readiness(False, f"HTTP {response.status_code}", ("api",))
    culprits = tuple(dict.fromkeys(_CHECK_PROGRAM.get(name, "api") for name in failing))
    return _Readiness(False, detail, culprits)


def wait_ready(supervisor: Supervisor, *, ready_url: str, timeout_s: float) -> StackStatus:
    # RUNNING only means "alive for startsecs": a program slower than that to fail (a
    # busy port, a rejected config under load) looks RUNNING for a while. So the stack is
    # up when /readyz says so, and a program that exits or restarts meanwhile has failed.
    deadline = time.monotonic() + timeout_s
    first_pid: dict[str, int] = {}
    while True:
        status = supervisor.status()
        layout = supervisor.layout
        failed = [p for p in status.programs if p.state in _EXITED]
        for p in status.programs:
            if p.name in first_pid and p.pid != first_pid[p.name] and p not in failed:
                failed.append(p)
            elif p.running and p.pid is not None:
                first_pid[p.name] = p.pid
        if failed:
            raise CommandFailed(
                _failure_report(layout, failed, headline="programs did not stay up")
            )
        readiness = _readiness(ready_url) if status.healthy else None
        if readiness is not None and readiness.ready:
            return status
        if time.monotonic() > deadline:
            late = [p for p in status.programs if not p.running]
            if late or readiness is None:
                headline = "programs did not reach RUNNING in time"
                raise CommandFailed(_failure_report(layout, late, headline=headline))
            culprits = [p for p in status.programs if p.name in readiness.culprits]
            headline = f"the stack is not ready in time: {readiness.detail} ({ready_url})"
            raise CommandFailed(_failure_report(layout, culprits, headline=headline))
        time.sleep(0.2)


def _failure_report(layout: StackLayout, programs: list[ProgramStatus], *, headline: str) -> str:
    named = ", ".join(
        f"{p.name} ({p.state}{': ' + p.description if p.description else ''})" for p in programs
    )
    lines = [f"{headline}: {named}" if named else headline]
    for program in programs:
        log = layout.program_log(program.name)
        lines.append(f"--- last lines of {log} ---")
        lines += last_lines(log, LOG_TAIL_LINES) or ["(empty)"]
    return "\n".join(lines)


def stop(supervisor: Supervisor, *, timeout_s: float = 120.0) -> int:
    """Shut supervisord down (it stops every program first) and wait for it to exit."""
    pid = supervisor.pid()
    supervisor.shutdown()
    try:
        psutil.Process(pid).wait(timeout=timeout_s)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired as exc:
        raise CommandFailed(
            f"supervisord (pid {pid}) still runs {timeout_s:.0f} s after shutdown"
        ) from exc
    return pid


def down(layout: StackLayout) -> int | None:
    """Stop the stack; the pid of the supervisord that stopped, or None when none ran."""
    supervisor = connect(layout)
    if supervisor is None:
        return None
    with supervisor:
        return stop(supervisor)
