"""`wapp service run`: the systemd unit's main process (Type=notify).

supervisord cannot tell systemd when the stack is ready, so this process starts it as a
child (`-n`), polls the api's /readyz and sends READY=1 only when it answers 200. It
forwards SIGTERM/SIGINT/SIGHUP to supervisord and exits with its status. With
`[general] log_target = "stdout"` it also pumps every program's output to its own stdout
as JSON lines naming the program (journald keeps them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import BinaryIO

import httpx

from appliance.errors import CommandFailed
from appliance.paths import secure_data_dir
from appliance.service.logpipes import ALL_PROGRAMS
from appliance.service.notify import NOTIFY_ENV, notify, notify_address
from appliance.service.pump import LogPump
from appliance.settings import Settings
from appliance.stack import control
from appliance.stack.layout import StackLayout
from appliance.stack.programs import program_names
from appliance.stack.rpc import connect

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def ready_url(settings: Settings) -> str:
    # A wildcard listen address is reached through loopback.
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
    host = wildcard.get(settings.api.host, settings.api.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.api.port}/readyz"


def _is_ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def run_service(
    settings: Settings,
    *,
    config_path: Path | None,
    workdir: Path,
    out: BinaryIO | None = None,
) -> int:
    layout = StackLayout.of(settings)
    layout.check_socket_paths(settings)
    secure_data_dir(layout.data_dir)
    layout.run_dir.mkdir(mode=0o700, exist_ok=True)
    running = connect(layout)
    if running is not None:
        with running:
            pid = running.pid()
        raise CommandFailed(f"the stack is already running (supervisord pid {pid})")
    pump: LogPump | None = None
    if settings.general.log_target == "stdout":
        names = [*program_names(settings), *ALL_PROGRAMS]
        pump = LogPump(layout, out or sys.stdout.buffer, names)
        pump.open()  # before rendering: the configs name the FIFOs only while read
    try:
        return _supervise(settings, config_path=config_path, workdir=workdir, pump=pump)
    finally:
        if pump is not None:
            pump.close()


def _supervise(
    settings: Settings, *, config_path: Path | None, workdir: Path, pump: LogPump | None
) -> int:
    layout = control.prepare(settings, config_path=config_path, workdir=workdir)
    address = notify_address()
    # The programs are not the service's main process: they must not notify.
    env = {key: value for key, value in os.environ.items() if key != NOTIFY_ENV}
    argv = [
        sys.executable,
        "-m",
        "supervisor.supervisord",
        "-n",
        "-c",
        str(layout.supervisord_conf),
    ]
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE if pump is not None else None,
        stderr=subprocess.STDOUT if pump is not None else None,
    )
    if pump is not None:
        assert proc.stdout is not None
        pump.add_stream(proc.stdout, "supervisord")
        pump.start()

    def forward(signum: int, _frame: FrameType | None) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)
        if signum != signal.SIGHUP:
            notify("STOPPING=1", address)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    url = ready_url(settings)
    try:
        notify(f"STATUS=starting; waiting for {url}", address)
        while proc.poll() is None:
            if _is_ready(url):
                notify(f"READY=1\nSTATUS=ready; supervisord pid {proc.pid}", address)
                break
            time.sleep(0.5)
        returncode = proc.wait()
    finally:
        # Whatever ends this process, supervisord (and the stack) must not outlive it.
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    if pump is not None:
        pump.wait(5.0)
    return _exit_status(returncode)
