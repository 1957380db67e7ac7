"""`wapp doctor`: check the whole box; each problem with what to do. Exit 1 when
something needs action (a warning or a failure), so a cron job or CI can alert on it."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import typer
from rich.console import Console
from rich.table import Table

from appliance.cli.context import settings as load
from appliance.cli.context import state
from appliance.cli.output import emit_json
from appliance.db.engine import create_db_engine, create_sessionmaker
from appliance.doctor import host, stack
from appliance.doctor.findings import Finding
from appliance.metrics import counters
from appliance.redis_client import create_redis
from appliance.settings import Settings, resolve_config_path

_STYLE = {"ok": "green", "info": "cyan", "warn": "yellow", "fail": "red"}


async def _stack_findings(conf: Settings, flap: _Flap) -> list[Finding]:
    db = create_db_engine(conf)
    redis = create_redis(conf)
    reader = create_sessionmaker(db, read_only=True)
    try:
        found = await stack.redis_checks(redis, conf)
        database = await stack.database(conf, reader)
        found += [database, *await stack.engines(redis, conf)]
        # Sessions and deliveries are rows: nothing to read from a database that failed.
        if database.level != "fail":
            found += await stack.sessions(reader)
            window = timedelta(minutes=flap.minutes)
            found += await stack.flapping(redis, reader, window=window, limit=flap.reconnects)
            found += await stack.webhooks(reader)
        return found
    finally:
        await redis.aclose()
        await db.dispose()


@dataclasses.dataclass(frozen=True)
class _Flap:
    minutes: float = stack.FLAP_WINDOW.total_seconds() / 60
    reconnects: int = stack.FLAP_RECONNECTS


def collect(ctx: typer.Context, flap: _Flap | None = None) -> list[Finding]:
    conf = load(ctx)
    found = host.versions(conf)
    found += [host.disk(conf), host.memory(conf)]
    found += stack.programs(conf)
    found += asyncio.run(_stack_findings(conf, flap or _Flap()))
    path = resolve_config_path(state(ctx).config_path)
    found.append(host.config_drift(conf, path.resolve() if path else None))
    return found


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="JSON output."),
        flap_minutes: float = typer.Option(
            _Flap.minutes,
            "--flap-window",
            min=1,
            max=counters.RECENT_RECONNECTS_S / 60,
            help="Minutes of reconnects looked at for flapping sessions.",
        ),
        flap_reconnects: int = typer.Option(
            _Flap.reconnects,
            "--flap-reconnects",
            min=0,
            help="A session with more reconnects than this within the window is flapping.",
        ),
    ) -> None:
        """Versions, disk and memory, Redis, the database, every program, stuck and flapping
        sessions,
        the webhook outbox and the running config; exit 1 when something needs action."""
        found = collect(ctx, _Flap(flap_minutes, flap_reconnects))
        needs = [f for f in found if f.needs_action]
        if as_json:
            emit_json(
                {
                    "ok": not needs,
                    "findings": [
                        {**dataclasses.asdict(f), "needsAction": f.needs_action} for f in found
                    ],
                }
            )
        else:
            table = Table("", "area", "check", "seen", "what to do")
            for f in found:
                style = _STYLE[f.level]
                table.add_row(
                    f"[{style}]{f.level}[/{style}]", f.area, f.check, f.detail, f.action or ""
                )
            out = Console()
            out.print(table)
            if needs:
                out.print(f"[yellow]{len(needs)} thing(s) need action[/yellow]")
            else:
                out.print("[green]all good[/green]")
        if needs:
            raise typer.Exit(1)
