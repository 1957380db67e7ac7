"""`wapp backup`: online, with the stack running (or not). Redis first, then the database:
the database is the system of record and the api re-enqueues from it what a stream lacks
(design.md, Where truth lives), so a database a moment newer than Redis loses nothing."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import orjson

from appliance import redis_keys
from appliance.backup import archive, database, passphrase, redis_state
from appliance.backup.redis_access import redis_for
from appliance.db.migrate import current
from appliance.errors import CommandFailed, UsageError
from appliance.security.keyring import next_path, old_path
from appliance.security.master_key import load_master_key
from appliance.settings import Settings

# Called with a description as each step starts.
Step = Callable[[str], None]
STEPS = 5


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    redis_keys: int
    sessions_auth: int


async def _snapshot(settings: Settings) -> list[redis_state.Record]:
    async with redis_for(settings) as redis:
        return await redis_state.snapshot(redis)


def default_path(settings: Settings) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.data_dir / "backups" / f"wapp-{stamp}.wappbak"


def create_backup(
    settings: Settings, target: Path, secret: str, config_file: Path | None, step: Step
) -> BackupResult:
    key_path = settings.master_key_path
    if next_path(key_path).exists() or old_path(key_path).exists():
        raise CommandFailed(
            "a master key rotation is unfinished: run `wapp keys rotate-master` first"
        )
    if target.exists():
        raise UsageError(f"{target} exists: choose another file name")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wapp-backup-", dir=target.parent))
    try:
        step("master key (wrapped under the passphrase)")
        wrapped = passphrase.wrap(load_master_key(key_path), secret)
        (staging / archive.MASTER_KEY).write_bytes(orjson.dumps(wrapped))
        step("Redis: auth state, streams, sent marks")
        records = asyncio.run(_snapshot(settings))
        (staging / archive.REDIS).write_bytes(redis_state.encode(records))
        step("database")
        (staging / archive.DB_DIR).mkdir()
        kind = database.kind(settings)
        db_name = "wapp.db" if kind == "sqlite" else "wapp.pgdump"
        revision = asyncio.run(current(settings))
        database.dump(settings, staging / archive.DB_DIR / db_name)
        step("config and sandbox state")
        if config_file is not None:
            shutil.copyfile(config_file, staging / archive.CONFIG)
        sim = settings.sandbox_data_dir
        if settings.sandbox.enabled and sim.is_dir():
            shutil.copytree(sim, staging / archive.SANDBOX_DIR)
        step(f"writing {target.name}")
        manifest = {
            "format": archive.FORMAT,
            "format_version": archive.FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(),
            "app_version": version("wapp"),
            "migration": revision,
            "database": {"kind": kind, "file": f"{archive.DB_DIR}/{db_name}"},
            "redis_keys": len(records),
        }
        partial = target.with_name(target.name + ".partial")
        archive.write(partial, staging, manifest)
        os.chmod(partial, 0o600)
        os.replace(partial, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    auth = sum(1 for r in records if r.key.startswith(redis_keys.auth_key("").encode()))
    return BackupResult(target, target.stat().st_size, len(records), auth)
