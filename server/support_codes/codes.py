"""Support code values: drawn uniformly, shown grouped for reading aloud, stored only as an HMAC.

A 12-digit code is about 40 bits: a plain SHA-256 of it would fall to a brute force in minutes
if the database leaked. So the stored value is HMAC-SHA256 under a server *pepper* — 32 random
bytes in ``DATA/support-codes.pepper`` (0600), never in the database. Nodes sharing one
PostgreSQL database must hold the same pepper file.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from common.files import atomic_write

PEPPER_FILE = "support-codes.pepper"
PEPPER_BYTES = 32


def new_code(digits: int) -> str:
    """A uniform random code of exactly ``digits`` digits (leading zeros kept)."""
    return str(secrets.randbelow(10 ** digits)).zfill(digits)


def grouped(code: str) -> str:
    """``482193775031`` → ``482 193 775 031`` (groups of three from the left)."""
    return " ".join(code[i:i + 3] for i in range(0, len(code), 3))


def normalized(text: str) -> str:
    """What a person typed, with the spaces and dashes of reading aloud removed."""
    return "".join(ch for ch in text if ch not in " -\t")


def load_pepper(data_dir: Path) -> bytes:
    """The node's pepper, created on first use."""
    path = data_dir / PEPPER_FILE
    if path.exists():
        pepper = path.read_bytes()
        if len(pepper) != PEPPER_BYTES:
            raise ValueError(f"{path}: expected {PEPPER_BYTES} bytes")
        return pepper
    pepper = secrets.token_bytes(PEPPER_BYTES)
    atomic_write(path, pepper, 0o600)
    return pepper


def code_hash(pepper: bytes, code: str) -> str:
    """The only form of a code the database holds."""
    return hmac.new(pepper, code.encode(), hashlib.sha256).hexdigest()
