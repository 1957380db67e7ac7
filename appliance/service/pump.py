"""Every program's output as JSON lines naming the program, on one stream (journald's).

A JSON object line gets `"program"` first; any other line (Redis, supervisord) becomes
`{"program": ..., "msg": ...}`. The pump keeps a writer of each FIFO open itself, so a
program's writer closing (supervisord reopening its logs) is never an end of file.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
from collections.abc import Iterable
from typing import IO, BinaryIO

import orjson

from appliance.service.logpipes import pipe_path, pipes_dir
from appliance.stack.layout import StackLayout

# A line longer than this is cut into pieces (each still a JSON line) rather than held.
MAX_LINE = 64 * 1024


def tag_line(program: str, line: bytes) -> bytes:
    text = line.rstrip(b"\r")
    if text.startswith(b"{"):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            parsed.pop("program", None)
            return orjson.dumps({"program": program, **parsed}) + b"\n"
    return orjson.dumps({"program": program, "msg": text.decode("utf-8", "replace")}) + b"\n"


class LogPump:
    def __init__(self, layout: StackLayout, out: BinaryIO, programs: Iterable[str]) -> None:
        self._layout = layout
        self._out = out
        self._programs = tuple(dict.fromkeys(programs))
        self._selector = selectors.DefaultSelector()
        self._partial: dict[int, bytes] = {}
        self._names: dict[int, str] = {}
        self._keep_open: list[int] = []
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="log-pump", daemon=True)
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create the FIFOs (0600) and hold them open: supervisord may open them from now."""
        directory = pipes_dir(self._layout)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for program in self._programs:
            path = pipe_path(self._layout, program)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a crashed runner's: a fresh FIFO, never a stale file
            os.mkfifo(path, 0o600)
            reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._keep_open.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
            self._watch(reader, program)

    def add_stream(self, stream: IO[bytes], program: str) -> None:
        """A pipe read until its end (supervisord's own stdout): the pump stops after it."""
        os.set_blocking(stream.fileno(), False)
        self._watch(stream.fileno(), program, final=True)

    def start(self) -> None:
        self._thread.start()

    def wait(self, timeout_s: float) -> None:
        self._ended.wait(timeout_s)
        self._drain_all()

    def close(self) -> None:
        for fd in [*self._names, *self._keep_open]:
            with contextlib.suppress(OSError):
                os.close(fd)
        for program in self._programs:
            with contextlib.suppress(FileNotFoundError):
                pipe_path(self._layout, program).unlink()

    def _watch(self, fd: int, program: str, *, final: bool = False) -> None:
        self._names[fd] = program
        self._partial[fd] = b""
        self._selector.register(fd, selectors.EVENT_READ, final)

    def _loop(self) -> None:
        while not self._ended.is_set():
            for key, _ in self._selector.select(timeout=1.0):
                if not self._read(key.fd) and key.data:
                    self._ended.set()

    def _drain_all(self) -> None:
        for fd in list(self._names):
            with contextlib.suppress(OSError, KeyError):
                self._read(fd)

    def _read(self, fd: int) -> bool:
        """Pass on what `fd` has; False at its end of file."""
        with self._lock:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return True
            if not data:
                self._flush_partial(fd)
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(fd)
                return False
            *lines, rest = (self._partial[fd] + data).split(b"\n")
            while len(rest) > MAX_LINE:
                lines.append(rest[:MAX_LINE])
                rest = rest[MAX_LINE:]
            self._partial[fd] = rest
            self._emit(self._names[fd], lines)
            return True

    def _flush_partial(self, fd: int) -> None:
        rest = self._partial.get(fd, b"")
        if rest:
            self._partial[fd] = b""
            self._emit(self._names[fd], [rest])

    def _emit(self, program: str, lines: list[bytes]) -> None:
        if not lines:
            return
        self._out.write(b"".join(tag_line(program, line) for line in lines if line.strip()))
        self._out.flush()
