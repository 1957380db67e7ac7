"""`wapp contracts export [--check]`."""

from __future__ import annotations

import typer
from rich.console import Console

from appliance import contracts_export
from appliance.errors import CommandFailed
from appliance.paths import GENERATED_DIR


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Redis contracts shared with the engine.", no_args_is_help=True)

    @group.command("export")
    def export(
        check: bool = typer.Option(
            False, "--check", help="Only verify the committed files are fresh."
        ),
    ) -> None:
        """Write JSON Schema and TypeScript types to engine/src/generated/."""
        if check:
            stale = contracts_export.stale_files(GENERATED_DIR)
            if stale:
                raise CommandFailed(
                    "generated contracts are stale: "
                    f"{', '.join(stale)}; run `wapp contracts export`"
                )
            Console().print("generated contracts are up to date")
            return
        for path in contracts_export.export(GENERATED_DIR):
            Console().print(f"wrote {path}")

    app.add_typer(group, name="contracts")
