"""`wapp backup [FILE]` and `wapp restore FILE`: thin over appliance/backup."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from appliance.backup import create, passphrase, restore
from appliance.cli.context import settings, state
from appliance.settings import resolve_config_path

_PASSPHRASE_FILE = typer.Option(
    None,
    "--passphrase-file",
    help=f"Read the passphrase from this file (else ${passphrase.PASSPHRASE_ENV}, else a prompt).",
)


def _bar(out: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=out,
    )


def register(app: typer.Typer) -> None:
    @app.command("backup")
    def backup_cmd(
        ctx: typer.Context,
        file: Path | None = typer.Argument(
            None, help="Where to write it (default: DATA_DIR/backups/wapp-<time>.wappbak)."
        ),
        passphrase_file: Path | None = _PASSPHRASE_FILE,
    ) -> None:
        """An online backup in one file: database, Redis auth state and queues, config,
        and the master key wrapped under a passphrase. Restore it with `wapp restore`."""
        s = settings(ctx)
        secret = passphrase.from_sources(passphrase_file, new=True)
        if secret is None:
            secret = passphrase.check(
                typer.prompt("passphrase for the backup", hide_input=True, confirmation_prompt=True)
            )
        target = (file or create.default_path(s)).absolute()
        config = resolve_config_path(state(ctx).config_path)
        out = Console()
        with _bar(out) as bar:
            task = bar.add_task("backup", total=create.STEPS)
            steps = 0

            def step(description: str) -> None:
                nonlocal steps
                bar.update(task, description=description, completed=steps)
                steps += 1

            result = create.create_backup(s, target, secret, config, step)
            bar.update(task, description="done", completed=create.STEPS)
        out.print(
            f"backup written: {result.path} ({result.size / 1048576:.1f} MiB, "
            f"{result.sessions_auth} session(s) with auth state, {result.redis_keys} Redis keys)"
        )
        out.print("keep the passphrase: without it the backup's sessions cannot be restored")

    @app.command("restore")
    def restore_cmd(
        ctx: typer.Context,
        file: Path = typer.Argument(..., help="A file `wapp backup` wrote."),
        passphrase_file: Path | None = _PASSPHRASE_FILE,
        force: bool = typer.Option(
            False, "--force", help="Replace this box's sessions and auth state (a used box)."
        ),
        with_config: bool = typer.Option(
            False,
            "--with-config",
            help="Also put the backup's config file in place of this box's.",
        ),
    ) -> None:
        """Restore a backup onto this box (stack stopped); its sessions come back connected,
        without a new QR, at the next `wapp up`. How sessions move to a new VPS."""
        s = settings(ctx)
        secret = passphrase.from_sources(passphrase_file, new=False)
        if secret is None:
            secret = typer.prompt("passphrase of the backup", hide_input=True)
        config_target = resolve_config_path(state(ctx).config_path) if with_config else None
        out = Console()
        with _bar(out) as bar:
            task = bar.add_task("restore", total=restore.STEPS)
            steps = 0

            def step(description: str) -> None:
                nonlocal steps
                bar.update(task, description=description, completed=steps)
                steps += 1

            result = restore.restore_backup(
                s, file, secret, force=force, config_target=config_target, step=step
            )
            bar.update(task, description="done", completed=restore.STEPS)
        taken = result.manifest.get("created_at", "?")
        out.print(
            f"restored the backup of {taken} (wapp {result.manifest.get('app_version')}, "
            f"{result.redis_keys} Redis keys); `wapp up` starts its sessions, no QR needed"
        )
        if result.config_written is not None:
            out.print(f"config restored to {result.config_written}")
