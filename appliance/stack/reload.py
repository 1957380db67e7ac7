"""A running stack against the settings file: what differs, `wapp reload` and `wapp restart`.

The run dir's supervisord.conf is what the running supervisord loaded (only `wapp up`,
when it starts a stack, and `wapp reload` write it). Each program's section embeds the
digest of the settings it reads (render.DIGEST_ENV), so comparing sections tells which
programs would run differently, and supervisord's own reread/update restarts exactly those.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import CommandFailed, UsageError
from appliance.settings import Settings
from appliance.stack.control import check_master_key, wait_ready
from appliance.stack.layout import StackLayout
from appliance.stack.programs import find_tools
from appliance.stack.render import RenderedStack, render_stack, write_configs
from appliance.stack.rpc import StackStatus, Supervisor

_PROGRAM = "program:"
# States in which supervisord's stopProcess applies (its RUNNING_STATES).
_STOPPABLE = ("RUNNING", "STARTING", "BACKOFF")


@dataclass(frozen=True)
class Drift:
    """Programs whose rendered sections differ between the file and the running stack."""

    added: list[str]
    changed: list[str]
    removed: list[str]

    @property
    def names(self) -> list[str]:
        return [*self.changed, *self.added, *self.removed]

    def describe(self) -> str:
        parts = [f"{name} (changed)" for name in self.changed]
        parts += [f"{name} (new)" for name in self.added]
        parts += [f"{name} (gone)" for name in self.removed]
        return ", ".join(parts)


def _sections(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return {
        name[len(_PROGRAM) :]: dict(parser.items(name))
        for name in parser.sections()
        if name.startswith(_PROGRAM)
    }


def running_workdir(layout: StackLayout) -> Path | None:
    """The directory the running stack's programs run in (the cwd of its `wapp up`)."""
    parser = configparser.RawConfigParser()
    if not parser.read(layout.supervisord_conf):
        return None
    directory = parser.get("supervisord", "directory", fallback=None)
    return Path(directory) if directory else None


def render_for(
    settings: Settings, layout: StackLayout, *, config_path: Path | None
) -> RenderedStack:
    # Rendered in the running stack's directory: running `wapp status` or `wapp reload`
    # from another cwd is not a change of settings.
    workdir = running_workdir(layout) or Path.cwd()
    return render_stack(settings, find_tools(settings), config_path=config_path, workdir=workdir)


def drift(settings: Settings, layout: StackLayout, *, config_path: Path | None) -> Drift:
    """How the settings from the file differ from those the running stack was started with."""
    try:
        running = _sections(layout.supervisord_conf.read_text(encoding="utf-8"))
    except OSError:
        running = {}
    wanted = _sections(render_for(settings, layout, config_path=config_path).supervisord_conf)
    return Drift(
        added=[name for name in wanted if name not in running],
        changed=[name for name in wanted if name in running and running[name] != wanted[name]],
        removed=[name for name in running if name not in wanted],
    )


def reload(
    supervisor: Supervisor,
    settings: Settings,
    *,
    config_path: Path | None,
    ready_url: str,
    timeout_s: float,
) -> tuple[StackStatus, Drift]:
    """Write the files from the settings and restart only the programs whose sections
    changed (supervisorctl's reread + update), then wait until the stack is ready."""
    layout = supervisor.layout
    check_master_key(settings)
    workdir = running_workdir(layout) or Path.cwd()
    write_configs(settings, find_tools(settings), config_path=config_path, workdir=workdir)
    # A new database URL must find its schema, as at `wapp up`.
    from appliance.db.migrate import upgrade

    asyncio.run(upgrade(settings))
    try:
        [[added, changed, removed]] = supervisor.rpc.reloadConfig()
    except xmlrpc.client.Fault as exc:
        raise CommandFailed(f"supervisord refused the new config: {exc.faultString}") from exc
    for name in [*removed, *changed]:
        supervisor.rpc.stopProcessGroup(name, True)
        supervisor.rpc.removeProcessGroup(name)
    for name in [*changed, *added]:
        supervisor.rpc.addProcessGroup(name)
        # Waits for the start (startsecs); autostart may already have begun it.
        supervisor.rpc.startProcessGroup(name, True)
    status = wait_ready(supervisor, ready_url=ready_url, timeout_s=timeout_s)
    return status, Drift(added=list(added), changed=list(changed), removed=list(removed))


def restart(
    supervisor: Supervisor, program: str | None, *, ready_url: str, timeout_s: float
) -> StackStatus:
    """Stop and start one program, or every one (in priority order), with the settings the
    stack runs with; then wait until the stack is ready."""
    names = [p.name for p in supervisor.status().programs]
    if program is None:
        # Reverse priority on the way down, priority order on the way up.
        supervisor.rpc.stopAllProcesses(True)
        supervisor.rpc.startAllProcesses(True)
    else:
        if program not in names:
            raise UsageError(
                f"unknown program {program!r}; valid names: {', '.join(names)}",
                details={"valid": names},
            )
        if supervisor.rpc.getProcessInfo(program)["statename"] in _STOPPABLE:
            supervisor.rpc.stopProcess(program, True)
        # A failed start is wait_ready's to report, naming the program and its log's tail.
        with contextlib.suppress(xmlrpc.client.Fault):
            supervisor.rpc.startProcess(program, True)
    return wait_ready(supervisor, ready_url=ready_url, timeout_s=timeout_s)
