"""`wapp service run` (the systemd unit's ExecStart): READY=1 only once /readyz is 200,
every program's output as JSON lines naming it on stdout, SIGTERM stops the stack."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from appliance.security.master_key import create_master_key
from appliance.service.logpipes import pipe_path
from appliance.service.notify import notify
from appliance.service.pump import LogPump, tag_line
from appliance.settings import Settings
from appliance.stack.layout import StackLayout
from appliance.stack.programs import Program, find_wapp
from appliance.stack.render import supervisord_conf
from tests.fixtures.stack import free_port


def test_a_json_line_gets_its_program_first_and_any_other_line_is_wrapped() -> None:
    tagged = orjson.loads(tag_line("api", b'{"level":"info","msg":"hi","program":"x"}'))
    assert next(iter(tagged)) == "program"
    assert tagged == {"program": "api", "level": "info", "msg": "hi"}
    assert orjson.loads(tag_line("redis", b"1:M * Ready to accept\r")) == {
        "program": "redis",
        "msg": "1:M * Ready to accept",
    }


def test_notify_reaches_an_abstract_socket_and_is_a_no_op_without_one() -> None:
    name = f"wapp-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert notify("READY=1", "\0" + name)
        assert sock.recv(100) == b"READY=1"
    assert not notify("READY=1", None)


def test_a_notify_socket_nobody_listens_on_is_not_an_error(tmp_path: Path) -> None:
    # The listener went away (a manager restarted, a test's listener quit): the stack stays.
    path = tmp_path / "gone.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    assert not notify("STOPPING=1", str(path))


def _receive(sock: socket.socket, timeout_s: float) -> list[bytes]:
    sock.settimeout(timeout_s)
    try:
        return [sock.recv(4096)]
    except TimeoutError:
        return []


def test_service_run_notifies_ready_after_readyz_and_logs_json_lines_to_stdout() -> None:
    # A short root: the unix sockets' paths must stay under 108 bytes.
    with tempfile.TemporaryDirectory(prefix="wsvc") as tmp:
        root = Path(tmp)
        port = free_port()
        config = root / "config.toml"
        config.write_text(
            f'[general]\ndata_dir = "{root / "data"}"\nlog_target = "stdout"\n'
            f"[api]\nport = {port}\n"
        )
        create_master_key(root / "data" / "master.key")
        notify_path = root / "notify.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(notify_path))
        env = {k: v for k, v in os.environ.items() if not k.startswith("WAPP_")}
        env["NOTIFY_SOCKET"] = str(notify_path)
        proc = subprocess.Popen(
            [str(find_wapp()), "--config", str(config), "service", "run"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            messages: list[bytes] = []
            deadline = time.monotonic() + 90
            while not any(m.startswith(b"READY=1") for m in messages):
                assert time.monotonic() < deadline, f"no READY=1: {messages}"
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                messages += _receive(sock, 1.0)
            # READY=1 means /readyz said 200: it still does.
            assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
            assert messages[0].startswith(b"STATUS=starting")
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=90)
            messages += _receive(sock, 1.0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            sock.close()
        assert proc.returncode == 0, err.decode()
        assert messages[-1] == b"STOPPING=1"
        lines = [orjson.loads(line) for line in out.splitlines() if line.strip()]
        programs = {line["program"] for line in lines}
        assert {"redis", "engine", "api", "supervisord"} <= programs, programs
        assert not (root / "data" / "logs" / "api.log").exists()
        assert not list((root / "data" / "run" / "logpipes").glob("*.pipe"))


def test_stdout_mode_names_a_fifo_only_while_someone_reads_it(tmp_path: Path) -> None:
    settings = Settings(general={"data_dir": tmp_path, "log_target": "stdout"})
    layout = StackLayout.of(settings)
    api = Program("api", ("wapp", "api"), 40, 2, 15)
    pump = LogPump(layout, io.BytesIO(), ["api"])
    # No reader: supervisord's open of the FIFO would block, so its own stdout instead.
    assert "stdout_logfile=/dev/stdout\n" in supervisord_conf(
        settings, layout, [api], workdir=tmp_path
    )
    pump.open()
    try:
        text = supervisord_conf(settings, layout, [api], workdir=tmp_path)
        assert f"stdout_logfile={pipe_path(layout, 'api')}\n" in text
        assert "stdout_logfile_maxbytes=0\n" in text
    finally:
        pump.close()
    files = Settings(general={"data_dir": tmp_path})
    text = supervisord_conf(files, layout, [api], workdir=tmp_path)
    assert f"stdout_logfile={layout.program_log('api')}\n" in text
