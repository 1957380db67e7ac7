"""The master keys a process may need while `wapp keys rotate-master` runs, read from disk.

Rotation (rotation.py) works with up to three files beside the master key:
`master.key` (current), `master.key.next` (the new key, before the swap) and
`master.key.old` (the previous key, after the swap until the last pass ends). A reader
tries every key present; a writer wraps with the newest (next if present, else current).
Files are re-read when they change (stat per use: wrapping happens on session open and
webhook create, rare enough), so the api and the engine follow a rotation without a
restart. The engine has the same rules (engine/src/auth/crypto.ts, MasterKeyring).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from appliance.security.master_key import load_master_key

NEXT_SUFFIX = ".next"
OLD_SUFFIX = ".old"


def next_path(path: Path) -> Path:
    return path.with_name(path.name + NEXT_SUFFIX)


def old_path(path: Path) -> Path:
    return path.with_name(path.name + OLD_SUFFIX)


@dataclass(frozen=True)
class _Stamp:
    ino: int
    mtime_ns: int
    size: int


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _Stamp(st.st_ino, st.st_mtime_ns, st.st_size)


class MasterKeyring:
    """The master key file and its rotation companions, each loaded once per change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: dict[Path, tuple[_Stamp, bytes]] = {}

    def _load(self, path: Path) -> bytes | None:
        stamp = _stamp(path)
        if stamp is None:
            self._cache.pop(path, None)
            return None
        cached = self._cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        key = load_master_key(path)
        self._cache[path] = (stamp, key)
        return key

    def wrapping_key(self) -> bytes:
        """The key new wrappings use: the next key while a rotation runs."""
        upcoming = self._load(next_path(self.path))
        if upcoming is not None:
            return upcoming
        current = self._load(self.path)
        # Absent: the plain loader says so in its usual words.
        return current if current is not None else load_master_key(self.path)

    def unwrapping_keys(self) -> list[bytes]:
        """Every key a stored wrapping may be under, newest first."""
        keys = [self._load(next_path(self.path)), self._load(self.path)]
        keys.append(self._load(old_path(self.path)))
        return [key for key in keys if key is not None]


def write_key_file(path: Path, key: bytes) -> None:
    """Write a key file atomically (temp + fsync + rename), 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64encode(key) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    sync_dir(path.parent)


def sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
