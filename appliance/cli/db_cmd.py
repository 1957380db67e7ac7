"""`wapp db upgrade|current`: schema migrations."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from appliance.cli.context import settings
from appliance.db import migrate


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The database: schema migrations.", no_args_is_help=True)

    @group.command("upgrade")
    def upgrade(ctx: typer.Context) -> None:
        """Migrate the database to the latest schema (idempotent; creates a SQLite file)."""
        revision = asyncio.run(migrate.upgrade(settings(ctx)))
        Console().print(f"database at revision {revision} (head)")

    @group.command("current")
    def current(ctx: typer.Context) -> None:
        """Print the database's schema revision and whether it is the latest; exit 1 if not."""
        revision = asyncio.run(migrate.current(settings(ctx)))
        head = migrate.head_revision()
        if revision == head:
            Console().print(f"{revision} (head)")
            return
        Console().print(f"{revision or 'none'} (head is {head}; run `wapp db upgrade`)")
        raise typer.Exit(1)

    app.add_typer(group, name="db")
