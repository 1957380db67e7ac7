"""`wapp watchdog run|status|events|ballast`: the watchdog program and its tools."""

from __future__ import annotations

import asyncio
import signal

import orjson
import typer

from appliance.cli.context import settings
from appliance.contracts import EngineBallastCommand, EngineBallastPayload
from appliance.errors import CommandFailed
from appliance.logs import configure_logging
from appliance.redis_client import create_redis
from appliance.settings import Settings
from appliance.watchdog import record


async def _serve(conf: Settings) -> None:
    # Imported here: only the supervised program needs the loop and the alerter.
    from appliance.watchdog.runner import Watchdog
    from appliance.webhooks.alerts import Alerter

    redis = create_redis(conf)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await Watchdog(conf, redis, alerter=Alerter(conf.webhooks, None, redis)).run(stopping)
    finally:
        await redis.aclose()


async def _events(conf: Settings, count: int) -> list[record.WatchdogEvent]:
    redis = create_redis(conf)
    try:
        return await record.latest(redis, count)
    finally:
        await redis.aclose()


async def _sample(conf: Settings) -> bytes | None:
    redis = create_redis(conf)
    try:
        raw: bytes | None = await redis.get(record.SAMPLE_KEY)
        return raw
    finally:
        await redis.aclose()


async def _ballast(conf: Settings, mb: int) -> None:
    from appliance.services.commands import enqueue

    redis = create_redis(conf)
    try:
        command = EngineBallastCommand(payload=EngineBallastPayload(mb=mb))
        await enqueue(redis, command, upstream="sandbox")
    finally:
        await redis.aclose()


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The watchdog: samples the stack, recycles a leaking engine or api.")
    app.add_typer(group, name="watchdog")

    @group.command("run")
    def run(ctx: typer.Context) -> None:
        """Run the watchdog in the foreground (supervisord runs it for `wapp up`)."""
        conf = settings(ctx)
        if not conf.watchdog.enabled:
            raise CommandFailed("the watchdog is disabled ([watchdog] enabled = false)")
        configure_logging(conf.general.log_level, "watchdog")
        asyncio.run(_serve(conf))

    @group.command("status")
    def status(ctx: typer.Context) -> None:
        """The watchdog's newest sample (RSS, CPU, open files of each program; Redis memory)."""
        raw = asyncio.run(_sample(settings(ctx)))
        if raw is None:
            raise CommandFailed("no recent watchdog sample: is the watchdog running?")
        typer.echo(orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2).decode())

    @group.command("events")
    def events(
        ctx: typer.Context,
        count: int = typer.Option(20, "--count", "-n", min=1, max=1000, help="How many."),
    ) -> None:
        """The watchdog's last actions (recycles, blocked recycles, Redis memory), JSON lines."""
        for event in asyncio.run(_events(settings(ctx), count)):
            typer.echo(event.model_dump_json())

    @group.command("ballast")
    def ballast(
        ctx: typer.Context,
        mb: int = typer.Option(..., "--mb", min=1, max=4096, help="Megabytes to hold."),
    ) -> None:
        """Sandbox only: make the sandbox engine allocate and hold MB (tests the watchdog)."""
        conf = settings(ctx)
        if not conf.sandbox.enabled:
            raise CommandFailed("ballast is sandbox-only and [sandbox] enabled = false")
        asyncio.run(_ballast(conf, mb))
        typer.echo(f"ballast of {mb} MB sent to the sandbox engine")
