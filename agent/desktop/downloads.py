"""Saving a file handed to the user into their Downloads folder — run by the helper, as the user.

Because the helper runs with the user's own rights, the file is theirs by construction and a
symlink in their home can lead it nowhere they could not write anyway; the root service never
writes into a home directory. The name comes from the other end, so only its last component
survives, reduced to a plain, visible file name; an existing file is never overwritten
(``name (1).ext``…), and the file is created exclusively, without following a symlink.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Characters kept in a dropped file's name; anything else becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9._ ()+-]")
MAX_NAME = 120
FALLBACK = "dropped-file"
MAX_TRIES = 1000


def downloads_dir(home: Path | None = None) -> Path:
    """``$XDG_DOWNLOAD_DIR`` when it is absolute, else ``~/Downloads``."""
    configured = os.environ.get("XDG_DOWNLOAD_DIR", "")
    if configured and os.path.isabs(configured):
        return Path(configured)
    return (home or Path.home()) / "Downloads"


def plain_name(name: str) -> str:
    """The last path component of ``name`` as a visible, plain file name (never "", ".", ".." or hidden)."""
    last = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", last).strip(" .")
    cleaned = cleaned.lstrip("-")[:MAX_NAME].strip(" .")
    return cleaned or FALLBACK


def save(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to a new file in ``directory`` (created 0700 if missing); returns its path."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = plain_name(name)
    stem, dot, suffix = base.rpartition(".")
    if not stem:
        stem, dot, suffix = base, "", ""
    for attempt in range(MAX_TRIES):
        candidate = base if attempt == 0 else f"{stem} ({attempt}){dot}{suffix}"
        path = directory / candidate
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return path
    raise FileExistsError(f"{MAX_TRIES} files named like {base!r} already exist")
