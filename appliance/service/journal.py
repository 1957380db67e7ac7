"""`wapp logs` when `[general] log_target = "stdout"`: the lines are in journald, under
the unit, each a JSON object whose first key names its program (appliance/service/pump)."""

from __future__ import annotations

import os
import shutil

from appliance.errors import CommandFailed

UNIT = "wapp.service"


def journalctl_argv(program: str | None, *, lines: int, follow: bool) -> list[str]:
    found = shutil.which("journalctl")
    if found is None:
        raise CommandFailed("log_target is stdout, but journalctl is not installed")
    argv = [found, "--unit", UNIT, "--output", "cat", "--no-pager", "--lines", str(lines)]
    if program is not None:
        # The pump writes `{"program":"<name>",...` with no spaces: one anchored match.
        argv += ["--grep", f'^\\{{"program":"{program}"']
    return [*argv, "--follow"] if follow else argv


def show(program: str | None, *, lines: int, follow: bool) -> None:
    """Replace this process with journalctl (its exit status is ours)."""
    argv = journalctl_argv(program, lines=lines, follow=follow)
    os.execv(argv[0], argv)
