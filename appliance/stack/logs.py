"""Reading the programs' log files: the last lines, and following what comes next.

Files, not XML-RPC: the logs stay readable when the stack is down.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from appliance.errors import UsageError
from appliance.settings import Settings
from appliance.stack.layout import StackLayout
from appliance.stack.programs import program_names

SUPERVISORD = "supervisord"


def log_names(settings: Settings) -> list[str]:
    return [*program_names(settings), SUPERVISORD]


def log_path(settings: Settings, name: str) -> Path:
    valid = log_names(settings)
    if name not in valid:
        raise UsageError(
            f"unknown program {name!r}; valid names: {', '.join(valid)}",
            details={"valid": valid},
        )
    layout = StackLayout.of(settings)
    return layout.supervisord_log if name == SUPERVISORD else layout.program_log(name)


def last_lines(path: Path, count: int) -> list[str]:
    if count <= 0 or not path.exists():
        return []
    with path.open("rb") as fh:
        tail: deque[bytes] = deque(fh, maxlen=count)
    return [line.decode("utf-8", "replace").rstrip("\n") for line in tail]


class _Follower:
    """One file followed from its current end, surviving supervisord's rotation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = None if not path.exists() else path.open("rb")
        if self._fh is not None:
            self._fh.seek(0, os.SEEK_END)
        self._partial = b""

    def read(self) -> list[str]:
        if self._fh is None:
            if not self.path.exists():
                return []
            self._fh = self.path.open("rb")
        lines = self._drain()
        if self._rotated():
            self._fh.close()
            self._fh = self.path.open("rb")
            lines += self._drain()
        return lines

    def _rotated(self) -> bool:
        assert self._fh is not None
        try:
            now = self.path.stat()
        except FileNotFoundError:
            return False
        was = os.fstat(self._fh.fileno())
        return now.st_ino != was.st_ino or now.st_size < self._fh.tell()

    def _drain(self) -> list[str]:
        assert self._fh is not None
        data = self._partial + self._fh.read()
        *complete, self._partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete]

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def follow(
    paths: dict[str, Path], *, interval_s: float = 0.25, stop: Callable[[], bool] = lambda: False
) -> Iterator[tuple[str, str]]:
    """Yield (name, line) for every line appended to any of the files, until stop()."""
    followers = {name: _Follower(path) for name, path in paths.items()}
    try:
        while not stop():
            idle = True
            for name, follower in followers.items():
                for line in follower.read():
                    idle = False
                    yield name, line
            if idle:
                time.sleep(interval_s)
    finally:
        for follower in followers.values():
            follower.close()
