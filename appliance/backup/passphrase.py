"""The master key in a backup, wrapped under a passphrase: Scrypt (memory-hard) derives an
AES-256-GCM key. n=2**17, r=8 takes ~128 MiB and a few hundred ms: cheap once per backup,
expensive per guess."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from appliance.backup.errors import BackupCorrupt, WrongPassphrase
from appliance.errors import UsageError

PASSPHRASE_ENV = "WAPP_BACKUP_PASSPHRASE"
_AAD = b"wapp backup master key v1"
N, R, P = 2**17, 8, 1
MIN_LENGTH = 8


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def wrap(master_key: bytes, passphrase: str) -> dict[str, Any]:
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    sealed = AESGCM(_derive(passphrase, salt, N, R, P)).encrypt(nonce, master_key, _AAD)
    b64 = base64.b64encode
    return {
        "kdf": "scrypt",
        "n": N,
        "r": R,
        "p": P,
        "salt": b64(salt).decode(),
        "nonce": b64(nonce).decode(),
        "sealed": b64(sealed).decode(),
    }


def unwrap(wrapped: dict[str, Any], passphrase: str) -> bytes:
    try:
        if wrapped["kdf"] != "scrypt":
            raise ValueError(wrapped["kdf"])
        salt, nonce, sealed = (
            base64.b64decode(wrapped[k], validate=True) for k in ("salt", "nonce", "sealed")
        )
        key = _derive(passphrase, salt, int(wrapped["n"]), int(wrapped["r"]), int(wrapped["p"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise BackupCorrupt(f"the backup's wrapped master key is malformed: {exc}") from exc
    try:
        return AESGCM(key).decrypt(nonce, sealed, _AAD)
    except InvalidTag:
        raise WrongPassphrase("wrong passphrase: the backup's master key does not open") from None


def from_sources(file: Path | None, *, new: bool) -> str | None:
    """`--passphrase-file`, else $WAPP_BACKUP_PASSPHRASE; None: the caller prompts. A `new`
    passphrase (for a backup) must be long enough; one to restore with is just tried."""
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"--passphrase-file: cannot read {file}: {exc.strerror}") from exc
        return check(text) if new else text
    env = os.environ.get(PASSPHRASE_ENV)
    if env is None:
        return None
    return check(env) if new else env


def check(passphrase: str) -> str:
    if len(passphrase) < MIN_LENGTH:
        raise UsageError(f"the passphrase needs at least {MIN_LENGTH} characters")
    return passphrase
