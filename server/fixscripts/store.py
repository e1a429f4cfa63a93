"""The fix scripts on disk: ``<data_dir>/fix-scripts/<sha256>``, content-addressed like update artifacts.

A file is written only when its bytes hash to its name (atomically, 0600), so what the server serves is
what the approvers hashed — and the device hashes it again before it runs anything.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from common.files import atomic_write
from protocol.requests import MAX_FIX_SCRIPT_BYTES

_SHA = re.compile(r"^[0-9a-f]{64}$")


class NotTheScript(ValueError):
    """The bytes are not the script the path names (SHA-256), or too many."""


def is_sha256(text: str) -> bool:
    return _SHA.match(text) is not None


def script_dir(data_dir: Path) -> Path:
    return data_dir / "fix-scripts"


def stored_path(data_dir: Path, sha256: str) -> Path:
    if not is_sha256(sha256):
        raise ValueError("not a SHA-256")
    return script_dir(data_dir) / sha256


def put(data_dir: Path, sha256: str, data: bytes) -> bool:
    """Store ``data`` as the script ``sha256`` (blocking: call in a thread); True when it was new."""
    if len(data) > MAX_FIX_SCRIPT_BYTES:
        raise NotTheScript(f"a fix script is at most {MAX_FIX_SCRIPT_BYTES} bytes")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise NotTheScript(f"the bytes have SHA-256 {actual}, not {sha256}")
    path = stored_path(data_dir, sha256)
    if path.is_file():
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, data, 0o600)
    return True
