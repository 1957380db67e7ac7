"""The backup file: a tar holding

| member | what |
| --- | --- |
| `manifest.json` | format, versions (app, migration), database kind, SHA-256 of the rest |
| `master-key.json` | the master key, wrapped under the passphrase (passphrase.py) |
| `database/wapp.db` or `database/wapp.pgdump` | database.py |
| `redis.bin` | redis_state.py |
| `config.toml` | the config file the box ran with (when it has one) |
| `sandbox/...` | the simulator's state (its keys, contacts), when the sandbox is on |

Read back only into a staging directory and only after every checksum matches.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from appliance.backup.errors import BackupCorrupt

FORMAT = "wapp-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MASTER_KEY = "master-key.json"
REDIS = "redis.bin"
CONFIG = "config.toml"
DB_DIR = "database"
SANDBOX_DIR = "sandbox"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write(target: Path, staging: Path, manifest: dict[str, Any]) -> None:
    """Tar every file under `staging` plus the manifest (with their checksums) into `target`."""
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    manifest = {**manifest, "files": {str(p.relative_to(staging)): sha256(p) for p in files}}
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    with tarfile.open(target, "w") as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(body)
        info.mode = 0o600
        tar.addfile(info, io.BytesIO(body))
        for path in files:
            tar.add(path, arcname=str(path.relative_to(staging)), recursive=False)


def read(source: Path, staging: Path) -> dict[str, Any]:
    """Unpack `source` into `staging` and check it whole; the manifest."""
    try:
        with tarfile.open(source, "r:") as tar:
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackupCorrupt(f"{source} is not a readable wapp backup: {exc}") from exc
    try:
        manifest: dict[str, Any] = json.loads((staging / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupCorrupt(f"{source} has no readable manifest: {exc}") from exc
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise BackupCorrupt(f"{source} is not a wapp backup")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupCorrupt(
            f"{source} has backup format {manifest.get('format_version')}, "
            f"this wapp reads {FORMAT_VERSION}"
        )
    for name, expected in manifest["files"].items():
        path = staging / name
        if not path.is_file():
            raise BackupCorrupt(f"{source} is incomplete: {name} is missing")
        if sha256(path) != expected:
            raise BackupCorrupt(f"{source} is damaged: {name} does not match its checksum")
    return manifest
