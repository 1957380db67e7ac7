"""What the chaos run drives: a real supervised sandbox stack, a webhook receiver, a careful client.

The stack is `wapp up -d` in a temp dir (as the tests' `stack_dir` fixture builds it). The
receiver is a real HTTP server on loopback that can go down and come back on the same port.
The client retries what failed (connection errors, 5xx, 409 SESSION_NOT_CONNECTED) with the
same Idempotency-Key, as a careful integration does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from appliance.security.master_key import create_master_key

ROOT = Path(__file__).resolve().parents[2]
WAPP = ROOT / ".venv" / "bin" / "wapp"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Stack:
    root: Path
    config: Path
    api_port: int
    key: str = ""

    @classmethod
    def create(cls, database_url: str | None) -> Stack:
        root = Path(tempfile.mkdtemp(prefix="wapp-chaos-", dir="/tmp"))
        data = root / "data"
        port = free_port()
        lines = [
            "[general]",
            f'data_dir = "{data}"',
            "[api]",
            f"port = {port}",
            "[engine]",
            "heartbeat_interval_s = 0.5",
            "heartbeat_ttl_s = 1.5",
            "[sessions]",
            "max_sessions = 1000",
            "[webhooks]",
            "allow_private = true",
            # A receiver outage of seconds must not push retries an hour away.
            "retry_initial_s = 1.0",
            "retry_max_s = 4.0",
            "[sandbox]",
            "enabled = true",
            f"port = {free_port()}",
            f"control_port = {free_port()}",
        ]
        if database_url:
            lines += ["[database]", f'url = "{database_url}"']
        config = root / "config.toml"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        create_master_key(data / "master.key")
        return cls(root=root, config=config, api_port=port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def wapp(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WAPP_")}
        return subprocess.run(
            [str(WAPP), "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            env=env,
        )

    def up(self) -> None:
        done = self.wapp("up", "-d", "--timeout", "60")
        if done.returncode != 0:
            raise RuntimeError(f"wapp up failed: {done.stdout}{done.stderr}")

    def down(self) -> None:
        self.wapp("down")

    def bootstrap_key(self) -> str:
        done = self.wapp("keys", "bootstrap-admin")
        if done.returncode != 0:
            raise RuntimeError(f"bootstrap-admin failed: {done.stderr}")
        self.key = done.stdout.strip().splitlines()[-1]
        return self.key

    def pid(self, program: str) -> int:
        done = self.wapp("status", "--json")
        body = json.loads(done.stdout or "{}")
        for prog in body.get("programs", []):
            if prog.get("name") == program and prog.get("pid"):
                return int(prog["pid"])
        raise RuntimeError(f"{program} has no pid: {done.stdout}")

    def kill9(self, program: str) -> int:
        pid = self.pid(program)
        os.kill(pid, signal.SIGKILL)
        return pid

    def signal(self, program: str, sig: signal.Signals) -> None:
        os.kill(self.pid(program), sig)

    def destroy(self) -> None:
        try:
            self.down()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Receiver:
    """Webhook posts by path; `down()` closes the port, `up()` reopens the same one."""

    port: int = field(default_factory=free_port)
    posts: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with receiver.lock:
                    receiver.posts[self.path].append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def snapshot(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.posts[path])


RETRYABLE_CODES = {"SESSION_NOT_CONNECTED"}


@dataclass
class Client:
    """The careful client: a failed send is retried with the same Idempotency-Key."""

    base_url: str
    key: str
    patience_s: float = 180.0
    http: httpx.AsyncClient = field(init=False)
    retries: int = 0

    def __post_init__(self) -> None:
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
            limits=httpx.Limits(max_connections=64),
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        idempotency_key: str | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        retry_ambiguous: bool = True,
    ) -> httpx.Response | None:
        """The answer once it is one of `ok`; None when patience ran out or it was refused.

        `retry_ambiguous=False` retries only what surely never reached the api (connection
        refused), for requests that are not idempotent.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        deadline = time.monotonic() + self.patience_s
        delay = 0.2
        while time.monotonic() < deadline:
            try:
                response = await self.http.request(method, path, json=json_body, headers=headers)
            except httpx.ConnectError:
                response = None
            except httpx.TransportError:
                if not retry_ambiguous:
                    return None
                response = None
            if response is not None:
                if response.status_code in ok:
                    return response
                code = _error_code(response)
                retryable = response.status_code >= 500 or code in RETRYABLE_CODES
                if not retryable or (response.status_code >= 500 and not retry_ambiguous):
                    return None
            self.retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)
        return None

    async def get_json(self, path: str) -> Any:
        response = await self.call("GET", path)
        return None if response is None else response.json()


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def new_key() -> str:
    return uuid.uuid4().hex
