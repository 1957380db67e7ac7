"""`wapp webhooks list|show|add|rm|rotate|test|replay`: admin access over the same services
as the API.

Endpoints added here are admin-wide (every event) unless `--session` or `--key` narrows
them. A secret is printed once, at creation or rotation. `--json` prints the API's answer
to the same request (its models, camelCase), so a script can switch between the two.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import typer
from rich.console import Console
from rich.table import Table

from appliance.api.routes.webhooks import (
    ReplayResult,
    TestResultPublic,
    WebhookList,
    WebhookPublic,
    WebhookWithSecret,
)
from appliance.cli.context import settings
from appliance.cli.db_access import database
from appliance.cli.output import JSON_OPTION, emit_json
from appliance.db.models import Webhook
from appliance.security.keyring import MasterKeyring
from appliance.settings import Settings
from appliance.webhooks import service
from appliance.webhooks.crypto import SecretBox

ADMIN = service.Scope(key_id=None, is_admin=True)


def _with_secret(created: service.Created) -> WebhookWithSecret:
    public = WebhookPublic.of(created.webhook)
    return WebhookWithSecret(**public.model_dump(), secret=created.secret)


def _table(hooks: list[WebhookPublic]) -> Table:
    table = Table("id", "url", "scope", "events", "enabled")
    for w in hooks:
        scope = (w.session_id and f"session {w.session_id}") or (
            f"key {w.owner_key_id}" if w.owner_key_id else "all (admin)"
        )
        state = "yes" if w.enabled else f"no: {w.disabled_reason or ''}"
        table.add_row(w.id, w.url, scope, ",".join(w.event_types or ["*"]), state)
    return table


def _box(s: Settings) -> SecretBox:
    return SecretBox(MasterKeyring(s.master_key_path))


def _since(value: str) -> datetime:
    """An ISO 8601 time, or a duration back from now: `30m`, `2h`, `1d`."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value and value[-1] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter("an ISO 8601 time or 30m/2h/1d", param_hint="--since") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Webhook endpoints (signed, retried, replayable).", no_args_is_help=True
    )

    @group.command("list")
    def list_(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
        """List endpoints (never their secrets)."""

        async def go() -> list[Webhook]:
            async with database(settings(ctx)) as sessions:
                return await service.list_webhooks(sessions, scope=ADMIN)

        hooks = [WebhookPublic.of(w) for w in asyncio.run(go())]
        if as_json:
            emit_json(WebhookList(items=hooks))
            return
        Console().print(_table(hooks))

    @group.command("show")
    def show(
        ctx: typer.Context, webhook_id: str = typer.Argument(...), as_json: bool = JSON_OPTION
    ) -> None:
        """One endpoint (never its secret)."""

        async def go() -> Webhook:
            async with database(settings(ctx)) as sessions:
                return await service.get_webhook(sessions, scope=ADMIN, webhook_id=webhook_id)

        hook = WebhookPublic.of(asyncio.run(go()))
        if as_json:
            emit_json(hook)
            return
        Console().print(_table([hook]))
        expires = hook.previous_secret_expires_at
        if expires is not None:
            Console().print(f"the previous secret signs too until {expires}")

    @group.command("add")
    def add(
        ctx: typer.Context,
        url: str = typer.Argument(..., help="http(s) URL of the receiver."),
        session: str | None = typer.Option(None, help="Only this session's events (id or name)."),
        key: str | None = typer.Option(None, help="Owned by this tenant key id (its sessions)."),
        event: list[str] = typer.Option([], "--event", help="Only this event type (repeat)."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Add an endpoint and print its secret once."""
        s = settings(ctx)
        scope = ADMIN if key is None else service.Scope(key_id=key, is_admin=False)

        async def go() -> service.Created:
            async with database(s) as sessions:
                return await service.create_webhook(
                    sessions,
                    scope=scope,
                    box=_box(s),
                    settings=s.webhooks,
                    url=url,
                    session=session,
                    event_types=event or None,
                )

        created = asyncio.run(go())
        if as_json:
            emit_json(_with_secret(created))
            return
        Console().print(f"added webhook {created.webhook.id} -> {created.webhook.url}")
        Console().print("signing secret (store it now, it is not shown again):")
        typer.echo(created.secret)

    @group.command("rm")
    def rm(ctx: typer.Context, webhook_id: str = typer.Argument(...)) -> None:
        """Delete an endpoint and its delivery history."""

        async def go() -> None:
            async with database(settings(ctx)) as sessions:
                await service.delete_webhook(sessions, scope=ADMIN, webhook_id=webhook_id)

        asyncio.run(go())
        Console().print(f"deleted webhook {webhook_id}")

    @group.command("rotate")
    def rotate(
        ctx: typer.Context,
        webhook_id: str = typer.Argument(...),
        overlap_s: float | None = typer.Option(
            None, min=0, help="Old secret keeps signing this long (default: config)."
        ),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """New signing secret; both sign during the overlap window."""
        s = settings(ctx)

        async def go() -> service.Created:
            async with database(s) as sessions:
                return await service.rotate_secret(
                    sessions,
                    scope=ADMIN,
                    box=_box(s),
                    settings=s.webhooks,
                    webhook_id=webhook_id,
                    overlap_s=overlap_s,
                )

        rotated = asyncio.run(go())
        if as_json:
            emit_json(_with_secret(rotated))
            return
        until = rotated.webhook.previous_secret_expires_at
        Console().print(
            f"rotated {webhook_id}; old secret signs until {until or 'now (no overlap)'}"
        )
        typer.echo(rotated.secret)

    @group.command("test")
    def test(
        ctx: typer.Context, webhook_id: str = typer.Argument(...), as_json: bool = JSON_OPTION
    ) -> None:
        """Send a signed `webhook.test` event now; exit 1 unless the receiver answers 2xx."""
        s = settings(ctx)

        async def go() -> service.TestResult:
            async with database(s) as sessions:
                return await service.send_test(
                    sessions, scope=ADMIN, box=_box(s), settings=s.webhooks, webhook_id=webhook_id
                )

        result = asyncio.run(go())
        if as_json:
            emit_json(
                TestResultPublic(
                    ok=result.ok,
                    event_id=result.event_id,
                    status_code=result.status_code,
                    latency_ms=result.latency_ms,
                    error=result.error,
                )
            )
        else:
            Console().print(
                f"{'ok' if result.ok else 'FAILED'}: status={result.status_code} "
                f"latency={result.latency_ms}ms webhook-id={result.event_id}"
                + (f" error={result.error}" if result.error else "")
            )
        if not result.ok:
            raise typer.Exit(1)

    @group.command("replay")
    def replay(
        ctx: typer.Context,
        webhook_id: str = typer.Argument(...),
        since: str = typer.Option(..., help="ISO 8601 time, or 30m / 2h / 1d back from now."),
        failed_only: bool = typer.Option(False, help="Only failed and dead-lettered deliveries."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Send again the deliveries of events since a time, with their webhook-id."""
        at = _since(since)

        async def go() -> int:
            async with database(settings(ctx)) as sessions:
                return await service.replay(
                    sessions,
                    scope=ADMIN,
                    webhook_id=webhook_id,
                    since=at,
                    include_delivered=not failed_only,
                )

        requeued = asyncio.run(go())
        if as_json:
            emit_json(ReplayResult(requeued=requeued))
            return
        Console().print(f"requeued {requeued} deliveries of {webhook_id}")

    app.add_typer(group, name="webhooks")
