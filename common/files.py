"""The project's one atomic file writer, and the one check for paths built from a peer's names.

Atomic writes: readers see the old file or the new one, never half of one. Each file is written
to a temp file beside it, created by ``os.open`` with its final ``mode`` (no chmod after the data
is in it, so a key is never readable by others, not even briefly), flushed to disk, then renamed
over the target; the directory is synced so the rename survives a crash.

Confinement: a name another party chose (a task run id, a session id, an artifact name) becomes
part of a path only through :func:`confined`, which accepts plain names only and checks that the
resolved path stays below its base — a run id of ``..`` once made the agent delete its own state
directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

#: A plain file name: ASCII letters, digits, ``_ : -`` and dots, never a leading dot (so never
#: ``.`` or ``..``, never hidden), at most 200 characters.
SAFE_NAME = re.compile(r"[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,199}")


class UnsafePath(ValueError):
    """A name from outside that is not a plain file name, or would lead out of its directory."""


def safe_name(name: str) -> str:
    """``name`` itself when it is a plain file name (:data:`SAFE_NAME`); else :class:`UnsafePath`."""
    if not isinstance(name, str):
        raise UnsafePath(f"not a name: {type(name).__name__}")
    if SAFE_NAME.fullmatch(name) is None:
        raise UnsafePath(f"not a plain name: {name[:40]!r}")
    return name


def confined(base: Path, *parts: str) -> Path:
    """``base/parts…`` resolved, after checking each part is a plain name and the result stays below ``base``.

    Raises :class:`UnsafePath` otherwise (a symlink leading out counts). ``base`` itself is
    trusted: it is the caller's own directory, never a peer's choice.
    """
    if not parts:
        raise UnsafePath("no name given")
    for part in parts:
        safe_name(part)
    root = Path(base).resolve()
    path = root.joinpath(*parts).resolve()
    if path == root or not path.is_relative_to(root):
        raise UnsafePath(f"{'/'.join(parts)[:80]!r} leads out of {root}")
    return path


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
        with contextlib.suppress(OSError):  # best effort, as above
            os.fsync(fd)
    finally:
        os.close(fd)


def private_directory(path: Path) -> Path:
    """Create ``path`` (and its parents) and make it 0700: only the owner may list or enter it.

    An existing directory is narrowed to 0700 when this user owns it; one owned by someone
    else, or a shared sticky directory like ``/tmp``, is never changed (the files inside are
    created private anyway). Returns ``path``.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid == os.geteuid() and not info.st_mode & stat.S_ISVTX and info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path
