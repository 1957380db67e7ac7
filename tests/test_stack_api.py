"""`wapp api` with several workers: each worker builds its Settings from the same file."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil

from appliance.stack.programs import find_wapp
from tests.fixtures.settings import database_url_under_test
from tests.fixtures.stack import free_port


def test_api_workers_read_the_config_file_wapp_api_was_given(
    tmp_path: Path, redis_url: str
) -> None:
    port = free_port()
    # Not ./config.toml in the cwd: the workers must not find it by searching.
    config = tmp_path / "elsewhere" / "appliance.toml"
    config.parent.mkdir()
    (tmp_path / "data").mkdir()
    database = database_url_under_test()
    config.write_text(
        f'[general]\ndata_dir = "{tmp_path / "data"}"\n'
        f"[api]\nport = {port}\nworkers = 2\n"
        f'[redis]\nmanaged = false\nurl = "{redis_url}"\n'
        + (f'[database]\nurl = "{database}"\n' if database else ""),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAPP_")}
    proc = subprocess.Popen(
        [str(find_wapp()), "--config", str(config), "api"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        body = None
        while body is None:
            assert proc.poll() is None, "wapp api exited"
            assert time.monotonic() < deadline, "the api did not answer within 30 s"
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()
            except httpx.TransportError:
                time.sleep(0.1)
        # No engine runs here, but Redis and the database answer: the workers use the
        # Redis URL of the file, not the default managed socket.
        checks = body["error"]["details"]["checks"]
        assert checks["redis"] == "ok"
        assert checks["database"] == "ok"
        assert len(psutil.Process(proc.pid).children()) >= 2
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()
