"""Where a program's output goes when `[general] log_target = "stdout"`.

supervisord writes each program's output to a file it opens itself; to get one stream on
journald in which every line names its program, `wapp service run` makes one FIFO per
program in the run dir and reads them all. supervisord's open of a FIFO nobody reads
would block forever, so a FIFO is used only while a reader holds it open (ENXIO
otherwise); without one (`wapp up` on a stdout config) the output goes to supervisord's
own stdout, untagged but not lost in a hang.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from appliance.stack.layout import StackLayout

PIPES_DIR = "logpipes"
# Every program a stack may run, so a program that `wapp reload` adds later (the sandbox
# turned on) still finds its FIFO read.
ALL_PROGRAMS = ("redis", "sim", "engine", "engine-sandbox", "api", "watchdog")


def pipes_dir(layout: StackLayout) -> Path:
    return layout.run_dir / PIPES_DIR


def pipe_path(layout: StackLayout, program: str) -> Path:
    return pipes_dir(layout) / f"{program}.pipe"


def has_reader(path: Path) -> bool:
    """True when `path` is a FIFO someone reads (opening it for writing would not block)."""
    try:
        if not stat.S_ISFIFO(path.stat().st_mode):
            return False
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):
            return False
        raise
    os.close(fd)
    return True


def stdout_destination(layout: StackLayout, program: str) -> str:
    """supervisord's `stdout_logfile` for `program` under log_target = "stdout"."""
    pipe = pipe_path(layout, program)
    return str(pipe) if has_reader(pipe) else "/dev/stdout"
