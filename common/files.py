"""The project's one atomic file writer: readers see the old file or the new one, never half of one.

Each file is written to a temp file beside it, created by ``os.open`` with its final ``mode`` (no
chmod after the data is in it, so a key is never readable by others, not even briefly), flushed to
disk, then renamed over the target; the directory is synced so the rename survives a crash.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path


def atomic_write(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8), file mode exactly ``mode``.

    The default mode is private; pass 0o644 for files meant to be public (certificates).
    """
    atomic_write_all([(path, data, mode)])


def atomic_write_all(files: Sequence[tuple[Path, bytes | str, int]]) -> None:
    """Write every ``(path, data, mode)`` to its temp file first, then rename them all.

    For files that belong together (a key and its certificate): a full disk or any other
    write error leaves all of the old ones in place, not a new key beside an old certificate.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data, mode in files:
            staged.append((_stage(Path(path), data.encode() if isinstance(data, str) else data, mode), Path(path)))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for directory in {path.parent for _, path in staged}:
        _sync_directory(directory)


def _stage(path: Path, data: bytes, mode: int) -> Path:
    """A temp file beside ``path`` holding ``data`` on disk, created with ``mode``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        # The umask may have narrowed ``mode``; make public files (certificates) exactly ``mode``.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _sync_directory(directory: Path) -> None:
    """Make the renames in ``directory`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
