"""`wapp restore`: everything is verified before anything is touched (the file whole and
matching its checksums, the passphrase, the schema, the database dump readable, the box
empty or --force); then the database, Redis, the master key, the sandbox, the config are
put in place, each by an atomic step. The stack must be stopped: the api holds the
database, the engine the auth state."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from appliance.backup import archive, database, passphrase, redis_state
from appliance.backup.errors import BackupCorrupt, BackupTooNew, BoxInUse
from appliance.backup.redis_access import redis_for
from appliance.db.migrate import alembic_config
from appliance.errors import CommandFailed
from appliance.security.keyring import write_key_file
from appliance.settings import Settings
from appliance.stack.layout import StackLayout
from appliance.stack.rpc import connect

Step = Callable[[str], None]
STEPS = 6


@dataclass(frozen=True)
class RestoreResult:
    manifest: dict[str, Any]
    redis_keys: int
    config_written: Path | None


def _stack_stopped(settings: Settings) -> None:
    running = connect(StackLayout.of(settings))
    if running is not None:
        with running:
            pid = running.pid()
        raise CommandFailed(f"the stack is running (supervisord pid {pid}): `wapp down` first")


def _known_revision(revision: str | None) -> None:
    if revision is None:
        return
    try:
        found = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError:
        found = None
    if found is None:
        raise BackupTooNew(
            f"the backup's database is at migration {revision}, which this wapp does not "
            "know: it was taken by a newer wapp; upgrade this box first",
            details={"migration": revision},
        )


async def _apply(
    settings: Settings,
    records: list[redis_state.Record],
    db_kind: str,
    db_file: Path,
    force: bool,
    step: Step,
) -> None:
    async with redis_for(settings) as redis:
        step("checking that this box is empty")
        if not force:
            used = []
            if await database.sessions_present(settings):
                used.append("sessions in the database")
            if await redis_state.auth_keys_present(redis):
                used.append("auth state in Redis")
            if used:
                raise BoxInUse(
                    f"this box is in use ({', '.join(used)}): restoring would replace "
                    "it; add --force to do so",
                    details={"found": used},
                )
        step("database")
        database.restore(settings, db_kind, db_file)
        step("Redis")
        await redis_state.replace_all(redis, records)


def restore_backup(
    settings: Settings,
    source: Path,
    secret: str,
    *,
    force: bool,
    config_target: Path | None,
    step: Step,
) -> RestoreResult:
    if not source.is_file():
        raise CommandFailed(f"no backup file {source}")
    _stack_stopped(settings)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wapp-restore-", dir=settings.data_dir))
    try:
        step("reading and checking the file")
        manifest = archive.read(source, staging)
        step("opening the master key")
        try:
            wrapped = orjson.loads((staging / archive.MASTER_KEY).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise BackupCorrupt(f"the backup's master key is unreadable: {exc}") from exc
        master_key = passphrase.unwrap(wrapped, secret)
        _known_revision(manifest.get("migration"))
        db = manifest.get("database") or {}
        db_file = staging / str(db.get("file", ""))
        if not db_file.is_file():
            raise BackupCorrupt("the backup has no database")
        database.check(str(db.get("kind")), db_file)
        records = redis_state.decode((staging / archive.REDIS).read_bytes())
        asyncio.run(_apply(settings, records, str(db.get("kind")), db_file, force, step))
        step("master key, sandbox state, config")
        write_key_file(settings.master_key_path, master_key)
        sim = staging / archive.SANDBOX_DIR
        if sim.is_dir():
            shutil.rmtree(settings.sandbox_data_dir, ignore_errors=True)
            shutil.copytree(sim, settings.sandbox_data_dir)
        written = None
        config = staging / archive.CONFIG
        if config_target is not None and config.is_file():
            written = config_target
            partial = config_target.with_name(config_target.name + ".restoring")
            shutil.copyfile(config, partial)
            partial.replace(config_target)
        return RestoreResult(manifest, len(records), written)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
