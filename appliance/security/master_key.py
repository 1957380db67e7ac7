"""The master key that wraps every per-session data key (design.md, Security).

32 random bytes, base64 in a 0600 file. Losing it makes stored auth state unreadable, so
it is never overwritten: creation uses O_EXCL.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from pathlib import Path

from appliance.errors import ConfigError

KEY_BYTES = 32


def create_master_key(path: Path) -> bool:
    """Create the key file if absent. True when created, False when one already existed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n")
    return True


def load_master_key(path: Path) -> bytes:
    try:
        st = path.stat()
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"security.master_key_file: cannot read {path}: {exc.strerror}",
            details={"field": "security.master_key_file", "file": str(path)},
        ) from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"security.master_key_file: {path} must be readable by its owner only (chmod 600)",
            details={"field": "security.master_key_file", "file": str(path)},
        )
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except binascii.Error as exc:
        raise ConfigError(
            f"security.master_key_file: {path} is not base64",
            details={"field": "security.master_key_file", "file": str(path)},
        ) from exc
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"security.master_key_file: {path} must hold {KEY_BYTES} bytes, has {len(key)}",
            details={"field": "security.master_key_file", "file": str(path)},
        )
    return key
