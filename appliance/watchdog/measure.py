"""What the watchdog measures: a program's process tree (psutil), Redis's memory.

A program is its whole process tree: uvicorn's workers belong to the api, and `wapp engine`
execs Node, so the engine's pid is Node's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

MB = 1024 * 1024


@dataclass(frozen=True)
class TreeFigures:
    pid: int
    processes: int
    rss_bytes: int
    # Percent of one core since this tree's previous sample (0.0 on the first one).
    cpu_percent: float
    # File descriptors: files, sockets and pipes, which is what LimitNOFILE counts.
    open_files: int

    @property
    def rss_mb(self) -> float:
        return self.rss_bytes / MB


class TreeSampler:
    """Samples process trees; keeps each process's psutil handle so CPU is a rate between
    two samples (psutil measures cpu_percent against the same object's previous call)."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def _handle(self, pid: int) -> psutil.Process:
        proc = self._procs.get(pid)
        if proc is None or not proc.is_running():
            proc = psutil.Process(pid)
            self._procs[pid] = proc
        return proc

    def sample(self, pid: int) -> TreeFigures | None:
        """The tree under `pid` now, or None when `pid` is gone."""
        try:
            root = self._handle(pid)
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            self._procs.pop(pid, None)
            return None
        rss = 0
        cpu = 0.0
        fds = 0
        seen = 0
        for child in members:
            try:
                proc = self._handle(child.pid)
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    cpu += proc.cpu_percent(interval=None)
                    fds += proc.num_fds()
                seen += 1
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.AccessDenied:
                # Another user's process in the tree (never ours in practice): skip it.
                continue
        self._forget_dead()
        return TreeFigures(pid=pid, processes=seen, rss_bytes=rss, cpu_percent=cpu, open_files=fds)

    def _forget_dead(self) -> None:
        for pid, proc in list(self._procs.items()):
            if not proc.is_running():
                del self._procs[pid]


@dataclass(frozen=True)
class RedisMemory:
    used_bytes: int
    # 0: no maxmemory set (an external Redis may have none).
    max_bytes: int

    @property
    def ratio(self) -> float | None:
        return self.used_bytes / self.max_bytes if self.max_bytes > 0 else None


def redis_memory(info: dict[str, object]) -> RedisMemory:
    """From `INFO memory`."""
    used = info.get("used_memory", 0)
    limit = info.get("maxmemory", 0)
    return RedisMemory(
        used_bytes=int(used) if isinstance(used, int | str) else 0,
        max_bytes=int(limit) if isinstance(limit, int | str) else 0,
    )
