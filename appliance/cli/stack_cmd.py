"""`wapp up|down|status|logs`: the supervised stack."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import typer
from rich.console import Console
from rich.table import Table

from appliance.cli.context import settings, state
from appliance.errors import CommandFailed
from appliance.settings import Settings, resolve_config_path
from appliance.stack import control, logs
from appliance.stack.layout import StackLayout
from appliance.stack.programs import program_names
from appliance.stack.rpc import StackStatus, connect


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
        layout = control.prepare(conf, config_path=_config_path(ctx), workdir=Path.cwd())
        if not detach:
            control.run_foreground(layout)
            return
        status, started = control.start_detached(
            layout, ready_url=f"{_api_url(conf)}/readyz", timeout_s=timeout
        )
        console = Console()
        console.print(_table(status))
        verb = "started" if started else "already running"
        console.print(f"stack {verb}; API on {_api_url(conf)}")

    @app.command("down")
    def down(ctx: typer.Context) -> None:
        """Stop every program and supervisord; nothing to do when the stack is not running."""
        pid = control.down(StackLayout.of(settings(ctx)))
        Console().print(
            "stack is not running" if pid is None else f"stopped supervisord (pid {pid})"
        )

    @app.command("status")
    def status(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Pid, state, uptime and RSS of every program; exit 1 unless all are RUNNING."""
        layout = StackLayout.of(settings(ctx))
        current = None
        supervisor = connect(layout)
        if supervisor is not None:
            with supervisor:
                current = supervisor.status()
        if as_json:
            body: dict[str, object] = {"running": False, "supervisord_pid": None, "programs": []}
            if current is not None:
                body = {"running": current.healthy, **dataclasses.asdict(current)}
            typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        elif current is not None:
            Console().print(_table(current))
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
        conf = settings(ctx)
        names = [program] if program is not None else program_names(conf)
        paths = {name: logs.log_path(conf, name) for name in names}
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
