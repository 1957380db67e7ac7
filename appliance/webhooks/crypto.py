"""Webhook secrets: generated, stored encrypted under a key derived from the master key.

AES-256-GCM with a random 96-bit nonce; the key is HKDF-SHA256 of the master key with
its own purpose label, so it is never the key that wraps the session data keys.
"""

from __future__ import annotations

import base64
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "whsec_"
_INFO = b"wapp webhook secrets v1"
_AAD = b"wapp:webhook-secret"


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def _key(master_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(master_key)


class SecretBox:
    def __init__(self, master_key: bytes) -> None:
        self._aead = AESGCM(_key(master_key))

    def encrypt(self, secret: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), _AAD)
        return base64.b64encode(nonce + sealed).decode()

    def decrypt(self, stored: str) -> str:
        raw = base64.b64decode(stored)
        return self._aead.decrypt(raw[:12], raw[12:], _AAD).decode()
