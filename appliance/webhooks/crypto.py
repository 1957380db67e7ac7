"""Webhook secrets: generated, stored encrypted under a key derived from the master key.

AES-256-GCM with a random 96-bit nonce; the key is HKDF-SHA256 of the master key with
its own purpose label, so it is never the key that wraps the session data keys.

Built on a `MasterKeyring` (the api does), a box follows `wapp keys rotate-master` online:
it decrypts under any key of the rotation and encrypts under the newest.
"""

from __future__ import annotations

import base64
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from appliance.security.keyring import MasterKeyring

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


def seal(master_key: bytes, secret: str) -> str:
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_key(master_key)).encrypt(nonce, secret.encode(), _AAD)
    return base64.b64encode(nonce + sealed).decode()


def open_sealed(master_key: bytes, stored: str) -> str:
    """Raises `InvalidTag` under a wrong key."""
    raw = base64.b64decode(stored)
    return AESGCM(_key(master_key)).decrypt(raw[:12], raw[12:], _AAD).decode()


class SecretBox:
    def __init__(self, master_key: bytes | MasterKeyring) -> None:
        self._ring = master_key if isinstance(master_key, MasterKeyring) else None
        self._fixed = master_key if isinstance(master_key, bytes) else None
        # HKDF per call would cost more than the AES: one AEAD per master key seen.
        self._aeads: dict[bytes, AESGCM] = {}

    def _aead(self, master_key: bytes) -> AESGCM:
        aead = self._aeads.get(master_key)
        if aead is None:
            aead = self._aeads[master_key] = AESGCM(_key(master_key))
        return aead

    def _keys(self) -> list[bytes]:
        if self._fixed is not None:
            return [self._fixed]
        assert self._ring is not None
        return self._ring.unwrapping_keys()

    def encrypt(self, secret: str) -> str:
        key = self._fixed if self._fixed is not None else self._ring_wrapping_key()
        nonce = secrets.token_bytes(12)
        sealed = self._aead(key).encrypt(nonce, secret.encode(), _AAD)
        return base64.b64encode(nonce + sealed).decode()

    def _ring_wrapping_key(self) -> bytes:
        assert self._ring is not None
        return self._ring.wrapping_key()

    def decrypt(self, stored: str) -> str:
        raw = base64.b64decode(stored)
        keys = self._keys()
        for key in keys[:-1]:
            try:
                return self._aead(key).decrypt(raw[:12], raw[12:], _AAD).decode()
            except InvalidTag:
                continue
        # The last key's failure is the one the caller sees.
        return self._aead(keys[-1]).decrypt(raw[:12], raw[12:], _AAD).decode()
