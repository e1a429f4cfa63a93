"""Connector credentials encrypted at rest: AES-256-GCM with a key kept outside the database.

The key is 32 random bytes in ``tickets.key`` in the server's data directory (mode 0600, created
on first use). A stolen database dump (or a PostgreSQL backup) therefore holds only ciphertext;
the key file has to be copied to every node of a multi-node installation. Each ciphertext is
bound to its connector's id (AES-GCM associated data), so one connector's secret copied onto
another row does not decrypt. Stored as ``nonce (12 bytes) || ciphertext+tag``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common import keyfile
from common.files import private_directory

KEY_FILE = "tickets.key"
_KEY_BYTES = 32
_NONCE_BYTES = 12


class SecretsUnavailable(Exception):
    """The key file is unreadable, malformed, readable by others, or does not open this ciphertext."""


class SecretBox:
    """Encrypts and decrypts connector secrets with the key file in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / KEY_FILE
        self._key: bytes | None = None

    def _load(self) -> bytes:
        if self._key is None:
            private_directory(self.path.parent)
            try:
                self._key = keyfile.load_or_create(self.path, _KEY_BYTES)
            except (keyfile.KeyFileError, OSError) as exc:
                raise SecretsUnavailable(str(exc)) from exc
        return self._key

    def encrypt(self, plaintext: str, bound_to: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + AESGCM(self._load()).encrypt(nonce, plaintext.encode(), bound_to.encode())

    def decrypt(self, blob: bytes, bound_to: str) -> str:
        if len(blob) <= _NONCE_BYTES:
            raise SecretsUnavailable("stored secret is malformed")
        try:
            plain = AESGCM(self._load()).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], bound_to.encode())
        except InvalidTag as exc:
            raise SecretsUnavailable("stored secret does not open with this server's key file") from exc
        return plain.decode()
