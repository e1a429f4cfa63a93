"""Secret key files (the storage key, the ticket connectors' key): read, or made once, safely.

A key is created by writing a temporary file beside it and hard-linking it into place, so a process
racing to create the same key sees either no file or the whole key, never half of one; the file must be
a regular file of mode 0600 (not a symlink) holding exactly the expected number of bytes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from pathlib import Path


class KeyFileError(Exception):
    """The key file is missing (and may not be made here), unreadable, of the wrong size or too open."""


def read_key(path: Path, size: int) -> bytes:
    """The ``size``-byte key in ``path``; FileNotFoundError if there is none, KeyFileError if it is unfit."""
    info = os.stat(path, follow_symlinks=False)
    if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
        raise KeyFileError(f"{path} must be a regular file of mode 0600")
    with open(path, "rb") as fh:
        key = fh.read(size + 1)
    if len(key) != size:
        raise KeyFileError(f"{path} does not hold a {size}-byte key")
    return key


def load_or_create(path: Path, size: int = 32) -> bytes:
    """The key in ``path``, made (random, 0600, parent 0700 when new) if there is none yet."""
    with contextlib.suppress(FileNotFoundError):  # none yet: made below
        return read_key(path, size)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:  # mkstemp made it 0600
            out.write(secrets.token_bytes(size))
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs is the key
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return read_key(path, size)
