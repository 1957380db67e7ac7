"""A running supervisord, reached through XML-RPC on its unix socket."""

from __future__ import annotations

import xmlrpc.client
from dataclasses import dataclass
from typing import Any

import psutil
from supervisor.xmlrpc import SupervisorTransport

from appliance.stack.layout import StackLayout

RUNNING = "RUNNING"


@dataclass(frozen=True)
class ProgramStatus:
    name: str
    state: str
    pid: int | None
    uptime_s: float | None
    rss_bytes: int | None
    description: str

    @property
    def running(self) -> bool:
        return self.state == RUNNING


@dataclass(frozen=True)
class StackStatus:
    supervisord_pid: int
    programs: list[ProgramStatus]

    @property
    def healthy(self) -> bool:
        return all(program.running for program in self.programs)


class Supervisor:
    def __init__(self, layout: StackLayout) -> None:
        self.layout = layout
        self._transport = SupervisorTransport(None, None, layout.supervisor_url)
        # The host part is ignored: the transport talks to the unix socket.
        self._proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=self._transport)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # The transport keeps one connection open across calls.
        self._transport.close()

    @property
    def rpc(self) -> Any:
        return self._proxy.supervisor

    def pid(self) -> int:
        return int(self.rpc.getPID())

    def process_info(self) -> list[dict[str, Any]]:
        infos: list[dict[str, Any]] = self.rpc.getAllProcessInfo()
        return infos

    def status(self) -> StackStatus:
        return StackStatus(
            supervisord_pid=self.pid(),
            programs=[_program_status(info) for info in self.process_info()],
        )

    def shutdown(self) -> None:
        self.rpc.shutdown()


def connect(layout: StackLayout) -> Supervisor | None:
    """The running supervisord of this data dir, or None when none answers."""
    if not layout.supervisor_socket.exists():
        return None
    supervisor = Supervisor(layout)
    try:
        supervisor.pid()
    except OSError:
        # A socket file left by a killed supervisord refuses connections.
        supervisor.close()
        return None
    return supervisor


def _tree_rss(pid: int) -> int | None:
    # The program's whole tree: uvicorn workers and node's children belong to it.
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total
    except psutil.NoSuchProcess:
        return None


def _program_status(info: dict[str, Any]) -> ProgramStatus:
    state = str(info["statename"])
    pid = int(info["pid"]) or None
    running = state == RUNNING and pid is not None
    return ProgramStatus(
        name=str(info["name"]),
        state=state,
        pid=pid if running else None,
        uptime_s=float(info["now"] - info["start"]) if running else None,
        rss_bytes=_tree_rss(pid) if running and pid is not None else None,
        description=str(info["description"]),
    )
