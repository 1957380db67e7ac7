"""Starting and stopping supervisord: `wapp up` and `wapp down` without the printing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from appliance.errors import CommandFailed
from appliance.settings import Settings
from appliance.stack.layout import StackLayout
from appliance.stack.logs import last_lines
from appliance.stack.programs import find_tools
from appliance.stack.render import write_configs
from appliance.stack.rpc import ProgramStatus, StackStatus, Supervisor, connect

# States supervisord does not leave by itself: FATAL after the last start retry, STOPPED
# after a deliberate stop. (EXITED is not one: autorestart turns it into STARTING.)
_GIVEN_UP = {"FATAL", "STOPPED", "UNKNOWN"}
LOG_TAIL_LINES = 20


def prepare(settings: Settings, *, config_path: Path | None, workdir: Path) -> StackLayout:
    """Render the configs, create the data dir's folders, bring the database schema up to date."""
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
    layout: StackLayout, *, health_url: str, timeout_s: float
) -> tuple[StackStatus, bool]:
    """Start supervisord in the background (unless it runs) and wait until every program runs.

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
            return _wait_running(supervisor, health_url=health_url, timeout_s=timeout_s), started
        except CommandFailed:
            if started:
                stop(supervisor)
            raise


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_running(supervisor: Supervisor, *, health_url: str, timeout_s: float) -> StackStatus:
    # RUNNING only means "alive for startsecs"; an api slower than that to fail (a busy
    # port, say) looks RUNNING for a while, so the api must also answer its liveness probe.
    deadline = time.monotonic() + timeout_s
    while True:
        status = supervisor.status()
        failed = [p for p in status.programs if p.state in _GIVEN_UP]
        if failed:
            raise CommandFailed(_failure_report(supervisor.layout, failed, timed_out=False))
        if status.healthy and _answers(health_url):
            return status
        if time.monotonic() > deadline:
            late = [p for p in status.programs if not p.running]
            if late:
                raise CommandFailed(_failure_report(supervisor.layout, late, timed_out=True))
            (api,) = [p for p in status.programs if p.name == "api"]
            raise CommandFailed(
                _failure_report(
                    supervisor.layout,
                    [api],
                    timed_out=True,
                    headline=f"the api does not answer {health_url} in time",
                )
            )
        time.sleep(0.2)


def _failure_report(
    layout: StackLayout,
    programs: list[ProgramStatus],
    *,
    timed_out: bool,
    headline: str | None = None,
) -> str:
    named = ", ".join(
        f"{p.name} ({p.state}{': ' + p.description if p.description else ''})" for p in programs
    )
    lines = [
        headline or f"programs did not reach RUNNING{' in time' if timed_out else ''}: {named}"
    ]
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
