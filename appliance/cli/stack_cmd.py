"""`wapp up|down|status|logs|restart|reload`: the supervised stack.

`down`, `status` and `logs` work on a running stack even when the config file is broken:
they use the copy of it the stack was started with (run dir) and warn about the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from appliance.cli.context import running_settings, settings, state
from appliance.errors import CommandFailed, ConfigError
from appliance.settings import Settings, load_settings, resolve_config_path
from appliance.stack import control, logs
from appliance.stack.layout import StackLayout
from appliance.stack.programs import program_names
from appliance.stack.reload import Drift, drift, reload, restart
from appliance.stack.rpc import StackStatus, Supervisor, connect


def _config_path(ctx: typer.Context) -> Path | None:
    found = resolve_config_path(state(ctx).config_path)
    return found.resolve() if found is not None else None


def _api_url(conf: Settings) -> str:
    # A wildcard listen address is reached through loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(conf.api.host, conf.api.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{conf.api.port}"


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _rss(rss: int | None) -> str:
    return "-" if rss is None else f"{rss / 1048576:.1f} MiB"


def _table(status: StackStatus) -> Table:
    table = Table(title=f"supervisord pid {status.supervisord_pid}")
    for column in ("program", "state", "pid", "uptime", "rss"):
        table.add_column(column)
    for p in status.programs:
        style = "green" if p.running else "red"
        table.add_row(
            p.name,
            f"[{style}]{p.state}[/{style}]",
            str(p.pid or "-"),
            _uptime(p.uptime_s),
            _rss(p.rss_bytes),
        )
    return table


def _not_running(status: StackStatus) -> CommandFailed:
    bad = ", ".join(f"{p.name} ({p.state})" for p in status.programs if not p.running)
    return CommandFailed(f"not running: {bad}")


def _warn_broken(broken: ConfigError | None, layout: StackLayout) -> None:
    if broken is not None:
        Console(stderr=True).print(
            f"[yellow]warning:[/yellow] {escape(broken.message)}; using the settings the "
            f"running stack was started with ({layout.applied_config})",
            highlight=False,
            soft_wrap=True,
        )


def _source(config_path: Path | None) -> str:
    return str(config_path) if config_path is not None else "the environment"


def _drift_note(changes: Drift, config_path: Path | None) -> str:
    return (
        f"the running stack's settings differ from {_source(config_path)}: "
        f"{changes.describe()}; `wapp reload` applies them"
    )


def _running(layout: StackLayout) -> Supervisor:
    supervisor = connect(layout)
    if supervisor is None:
        raise CommandFailed(
            f"the stack is not running (no supervisord on {layout.supervisor_socket}); "
            "`wapp up -d` starts it"
        )
    return supervisor


def _stack_settings(conf: Settings, layout: StackLayout) -> Settings:
    """The settings the running stack was started with (its api's address, say)."""
    if not layout.applied_config.is_file():
        return conf
    try:
        return load_settings(layout.applied_config, search=False)
    except ConfigError:
        return conf


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up(
        ctx: typer.Context,
        detach: bool = typer.Option(
            False, "--detach", "-d", help="Run in the background; wait until the stack is ready."
        ),
        timeout: float = typer.Option(
            60.0, "--timeout", help="Seconds --detach waits for RUNNING programs and /readyz."
        ),
    ) -> None:
        """Render the configs, migrate the database and run the stack under supervisord."""
        conf = settings(ctx)
        config_path = _config_path(ctx)
        ready_url = f"{_api_url(conf)}/readyz"
        running = connect(StackLayout.of(conf))
        if running is not None:
            # Its run dir is the running stack's: nothing is rewritten, only compared.
            with running:
                changes = drift(conf, running.layout, config_path=config_path)
                if changes.names:
                    raise CommandFailed(_drift_note(changes, config_path))
                if not detach:
                    raise CommandFailed(
                        f"the stack is already running (supervisord pid {running.pid()}); "
                        "`wapp down` first"
                    )
                status = control.wait_ready(running, ready_url=ready_url, timeout_s=timeout)
            console = Console()
            console.print(_table(status))
            console.print(f"stack already running; API on {_api_url(conf)}")
            return
        layout = control.prepare(conf, config_path=config_path, workdir=Path.cwd())
        if not detach:
            control.run_foreground(layout)
            return
        status, started = control.start_detached(layout, ready_url=ready_url, timeout_s=timeout)
        console = Console()
        console.print(_table(status))
        verb = "started" if started else "already running"
        console.print(f"stack {verb}; API on {_api_url(conf)}")

    @app.command("reload")
    def reload_(
        ctx: typer.Context,
        timeout: float = typer.Option(
            60.0, "--timeout", help="Seconds to wait for RUNNING programs and /readyz."
        ),
    ) -> None:
        """Apply the config file to the running stack: restart only the programs whose
        settings changed, then wait until the stack is ready."""
        conf = settings(ctx)
        config_path = _config_path(ctx)
        with _running(StackLayout.of(conf)) as supervisor:
            status, changes = reload(
                supervisor,
                conf,
                config_path=config_path,
                ready_url=f"{_api_url(conf)}/readyz",
                timeout_s=timeout,
            )
        console = Console()
        console.print(_table(status))
        if changes.names:
            console.print(f"reloaded {_source(config_path)}: {changes.describe()}")
        else:
            console.print(f"reloaded {_source(config_path)}: no program's settings changed")

    @app.command("restart")
    def restart_(
        ctx: typer.Context,
        program: str | None = typer.Argument(None, help="Program name (default: every program)."),
        timeout: float = typer.Option(
            60.0, "--timeout", help="Seconds to wait for RUNNING programs and /readyz."
        ),
    ) -> None:
        """Restart one program (or all) with the settings the stack runs with; `wapp reload`
        applies a changed config file."""
        conf = settings(ctx)
        layout = StackLayout.of(conf)
        ready_url = f"{_api_url(_stack_settings(conf, layout))}/readyz"
        with _running(layout) as supervisor:
            status = restart(supervisor, program, ready_url=ready_url, timeout_s=timeout)
            changes = drift(conf, layout, config_path=_config_path(ctx))
        console = Console()
        console.print(_table(status))
        console.print(f"restarted {program or 'every program'}")
        if changes.names:
            Console(stderr=True).print(
                f"[yellow]note:[/yellow] {escape(_drift_note(changes, _config_path(ctx)))}",
                highlight=False,
                soft_wrap=True,
            )

    @app.command("down")
    def down(ctx: typer.Context) -> None:
        """Stop every program and supervisord; nothing to do when the stack is not running."""
        conf, broken = running_settings(ctx)
        layout = StackLayout.of(conf)
        _warn_broken(broken, layout)
        pid = control.down(layout)
        Console().print(
            "stack is not running" if pid is None else f"stopped supervisord (pid {pid})"
        )

    @app.command("status")
    def status(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Pid, state, uptime and RSS of every program, and whether the running stack's
        settings differ from the file; exit 1 unless all are RUNNING."""
        conf, broken = running_settings(ctx)
        layout = StackLayout.of(conf)
        _warn_broken(broken, layout)
        config_path = _config_path(ctx) if broken is None else None
        current = None
        changes: Drift | None = None
        supervisor = connect(layout)
        if supervisor is not None:
            with supervisor:
                current = supervisor.status()
            if broken is None:
                changes = drift(conf, layout, config_path=config_path)
        if as_json:
            body: dict[str, object] = {
                "running": False,
                "supervisord_pid": None,
                "programs": [],
                "settings_differ": None,
            }
            if current is not None:
                body = {"running": current.healthy, **dataclasses.asdict(current)}
                body["settings_differ"] = changes.names if changes is not None else None
            typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        elif current is not None:
            Console().print(_table(current))
            if changes is not None and changes.names:
                Console().print(
                    f"[yellow]{escape(_drift_note(changes, config_path))}[/yellow]",
                    highlight=False,
                    soft_wrap=True,
                )
        if current is None:
            raise CommandFailed(
                f"the stack is not running (no supervisord on {layout.supervisor_socket})"
            )
        if not current.healthy:
            raise _not_running(current)

    @app.command("logs")
    def logs_(
        ctx: typer.Context,
        program: str | None = typer.Argument(None, help="Program name (default: every program)."),
        follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
        lines: int = typer.Option(50, "--lines", "-n", min=0, help="How many last lines to show."),
    ) -> None:
        """Print the last lines of the programs' log files (in the data dir's logs/)."""
        conf, broken = running_settings(ctx)
        _warn_broken(broken, StackLayout.of(conf))
        names = [program] if program is not None else program_names(conf)
        paths = {name: logs.log_path(conf, name) for name in names}
        if conf.general.log_target == "stdout":
            # The system install: every line is in journald (appliance/service/journal.py).
            from appliance.service import journal

            journal.show(program, lines=lines, follow=follow)
        prefix = program is None

        def emit(name: str, line: str) -> None:
            typer.echo(f"{name} | {line}" if prefix else line)

        for name, path in paths.items():
            for line in logs.last_lines(path, lines):
                emit(name, line)
        if follow:
            try:
                for name, line in logs.follow(paths):
                    emit(name, line)
            except KeyboardInterrupt:
                return
