"""`wapp keys create|list|show|quotas|revoke|bootstrap-admin`. A key's secret is printed
once, at creation."""

from __future__ import annotations

import asyncio
from typing import Literal

import orjson
import typer
from rich.console import Console
from rich.table import Table

from appliance.auth import api_keys
from appliance.cli import key_usage
from appliance.cli.context import settings
from appliance.cli.db_access import database
from appliance.db.models import ApiKey
from appliance.settings import Settings


def _row(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "maxSessions": key.max_sessions,
        "messagesPerDay": key.messages_per_day,
        "createdAt": key.created_at.isoformat(),
        "revokedAt": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def _dumps(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _quota(value: str | None, option: str) -> int | None:
    """A quota as typed: a positive number, or `none` for unlimited."""
    if value is None or value.lower() in ("none", "unlimited"):
        return None
    if not value.isdigit() or int(value) < 1:
        raise typer.BadParameter("a positive number, or none (unlimited)", param_hint=option)
    return int(value)


def _api_url(s: Settings) -> str:
    host = "127.0.0.1" if s.api.host in ("0.0.0.0", "::") else s.api.host
    return f"http://{host}:{s.api.port}"


def _print_key(key: ApiKey, used: key_usage.Usage, as_json: bool) -> None:
    row = _row(key)
    if as_json:
        typer.echo(
            _dumps(
                {**row, "usage": {"sessions": used.sessions, "messagesToday": used.messages_today}}
            )
        )
        return
    out = Console()
    state = f"revoked {row['revokedAt']}" if key.revoked_at else "active"
    out.print(f"key {key.id} ({key.name}), {key.role}, {state}")
    out.print(f"  sessions:       {used.sessions} of {key.max_sessions or 'unlimited'}")
    today = "?" if used.messages_today is None else used.messages_today
    out.print(f"  messages today: {today} of {key.messages_per_day or 'unlimited'} (UTC day)")


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="API keys (stored hashed; the secret is shown once).", no_args_is_help=True
    )

    @group.command("create")
    def create(
        ctx: typer.Context,
        name: str = typer.Option(..., help="What the key is for."),
        role: str = typer.Option("tenant", help="admin or tenant."),
        max_sessions: int | None = typer.Option(None, min=1, help="Quota: sessions."),
        messages_per_day: int | None = typer.Option(None, min=1, help="Quota: messages a day."),
        as_json: bool = typer.Option(False, "--json", help="JSON output, with the key."),
    ) -> None:
        """Create a key and print it once."""
        if role not in ("admin", "tenant"):
            raise typer.BadParameter("role must be admin or tenant", param_hint="--role")
        checked: Literal["admin", "tenant"] = "admin" if role == "admin" else "tenant"

        async def go() -> api_keys.CreatedKey:
            async with database(settings(ctx)) as sessions:
                return await api_keys.create_api_key(
                    sessions,
                    name=name,
                    role=checked,
                    max_sessions=max_sessions,
                    messages_per_day=messages_per_day,
                )

        created = asyncio.run(go())
        if as_json:
            typer.echo(_dumps({**_row(created.key), "key": created.plaintext}))
            return
        Console().print(f"created {created.key.role} key {created.key.id} ({created.key.name})")
        Console().print("store it now, it is not shown again:")
        typer.echo(created.plaintext)

    @group.command("list")
    def list_keys(
        ctx: typer.Context,
        all_keys: bool = typer.Option(False, "--all", help="Include revoked keys."),
        as_json: bool = typer.Option(False, "--json", help="JSON output."),
    ) -> None:
        """List keys (never their secrets)."""

        async def go() -> list[ApiKey]:
            async with database(settings(ctx)) as sessions:
                return await api_keys.list_api_keys(sessions, include_revoked=all_keys)

        rows = [_row(key) for key in asyncio.run(go())]
        if as_json:
            typer.echo(_dumps(rows))
            return
        table = Table("id", "name", "role", "quotas", "created", "revoked")
        for row in rows:
            quotas = f"sessions={row['maxSessions'] or '-'} msgs/day={row['messagesPerDay'] or '-'}"
            table.add_row(
                str(row["id"]),
                str(row["name"]),
                str(row["role"]),
                quotas,
                str(row["createdAt"]),
                str(row["revokedAt"] or ""),
            )
        Console().print(table)

    @group.command("show")
    def show(
        ctx: typer.Context,
        key_id: str = typer.Argument(..., help="The key's id."),
        as_json: bool = typer.Option(False, "--json", help="JSON output."),
    ) -> None:
        """One key: role, quotas and what it used of them today."""
        s = settings(ctx)

        async def go() -> tuple[ApiKey, key_usage.Usage]:
            async with database(s) as sessions:
                key = await api_keys.get_api_key(sessions, key_id)
                return key, await key_usage.usage(sessions, s, key)

        key, used = asyncio.run(go())
        _print_key(key, used, as_json)

    @group.command("quotas")
    def quotas(
        ctx: typer.Context,
        key_id: str = typer.Argument(..., help="The key's id."),
        max_sessions: str | None = typer.Option(
            None, help="Sessions it may own: a number, or none (unlimited). Default: unchanged."
        ),
        messages_per_day: str | None = typer.Option(
            None, help="Messages a UTC day: a number, or none (unlimited). Default: unchanged."
        ),
        as_json: bool = typer.Option(False, "--json", help="JSON output."),
    ) -> None:
        """Show a key's quotas and today's use; with options, set them (as PUT
        /v1/keys/{id}/quotas does; an option not given keeps its value)."""
        s = settings(ctx)
        sessions_quota = _quota(max_sessions, "--max-sessions")
        messages_quota = _quota(messages_per_day, "--messages-per-day")

        async def go() -> tuple[ApiKey, key_usage.Usage]:
            async with database(s) as sessions:
                key = await api_keys.get_api_key(sessions, key_id)
                if max_sessions is not None or messages_per_day is not None:
                    key = await api_keys.set_quotas(
                        sessions,
                        key_id,
                        max_sessions=sessions_quota
                        if max_sessions is not None
                        else key.max_sessions,
                        messages_per_day=messages_quota
                        if messages_per_day is not None
                        else key.messages_per_day,
                    )
                return key, await key_usage.usage(sessions, s, key)

        key, used = asyncio.run(go())
        _print_key(key, used, as_json)

    @group.command("revoke")
    def revoke(ctx: typer.Context, key_id: str = typer.Argument(..., help="The key's id.")) -> None:
        """Revoke a key; requests with it are refused from now on."""

        async def go() -> ApiKey:
            async with database(settings(ctx)) as sessions:
                return await api_keys.revoke_api_key(sessions, key_id)

        key = asyncio.run(go())
        Console().print(f"revoked {key.id} ({key.name})")

    @group.command("bootstrap-admin")
    def bootstrap_admin(ctx: typer.Context) -> None:
        """Create the first admin key when none exists (what ./install.sh prints once)."""
        s = settings(ctx)

        async def go() -> api_keys.CreatedKey | None:
            async with database(s) as sessions:
                return await api_keys.ensure_admin_key(sessions)

        created = asyncio.run(go())
        out = Console()
        out.print(f"API: {_api_url(s)}  (docs: {_api_url(s)}/docs)")
        if created is None:
            out.print(
                "an admin API key exists already (it was shown once, at creation); "
                "`wapp keys create --role admin --name ...` makes another"
            )
            return
        out.print("first admin API key (store it now, it is not shown again):")
        typer.echo(created.plaintext)

    from appliance.cli import rotate_master_cmd

    rotate_master_cmd.register(group)
    app.add_typer(group, name="keys")
