"""The running-server lock: a shared ``flock`` on ``DATA/server.lock`` held while a server runs.

``helpline admin restore`` takes it exclusively and refuses when it cannot: restoring under a
running server would have it write into (or over) the restored files. Shared, so several
processes on one data directory (a test's second node) do not refuse each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = "server.lock"


class ServerRunning(Exception):
    """A server holds the data directory."""


class RestoreRunning(Exception):
    """A restore holds the data directory exclusively: the server must not open its database now."""


def hold_shared(data_dir: Path) -> int:
    """Take the shared lock for a running server, before its database is opened; return the descriptor.

    Never waits: while ``helpline admin restore`` holds it exclusively (the SQLite file may be being
    swapped) the server refuses to start with :class:`RestoreRunning` instead of serving the old file.
    """
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise RestoreRunning(f"a restore is running on {data_dir} ({LOCK_FILE} is held exclusively): "
                             "start the server when it has finished") from exc
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """Hold the lock exclusively for the block; :class:`ServerRunning` when a server holds it."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ServerRunning(f"a Helpline server is running on {data_dir}; stop it first") from exc
        yield
    finally:
        os.close(fd)
