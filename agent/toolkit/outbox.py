"""A file the technician fetches from the device: which paths may go, and reading one without following links.

A path must be absolute (``~`` is the user's home), without ``.``/``..`` components, and the
same as its real path (no symlink anywhere in it); the file is opened with ``O_NOFOLLOW`` and
``O_NONBLOCK`` (a FIFO cannot hang the session) and must be a regular file within the size cap.
Under a grant, a path must match one of the grant's ``paths`` (:func:`covered`), component by
component: ``*`` never crosses a ``/``, and a pattern naming a folder covers what is inside it.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path

from .inbox import InboxRefused

FetchRefused = InboxRefused


def resolve(path: str, home: Path) -> str:
    """The absolute, checked form of ``path``; FetchRefused when it is relative, has ``..`` or a symlink."""
    if path.startswith("~/") or path == "~":
        path = str(home) + path[1:]
    if not path.startswith("/") or "\x00" in path:
        raise FetchRefused("bad_path", "the path must be absolute (or start with ~/)")
    parts = path.split("/")
    if any(part in (".", "..") for part in parts):
        raise FetchRefused("bad_path", "the path must not contain . or .. components")
    clean = "/" + "/".join(p for p in parts if p)
    if os.path.realpath(clean) != clean:
        raise FetchRefused("target_unsafe", "the path goes through a symbolic link")
    return clean


def covered(path: str, patterns: tuple[str, ...], home: Path) -> bool:
    """Does one of the grant's ``patterns`` cover the resolved ``path``?"""
    segments = path.strip("/").split("/")
    for pattern in patterns:
        if pattern.startswith("~"):
            pattern = str(home) + pattern[1:]
        wanted = [p for p in pattern.strip("/").split("/") if p]
        if ".." in wanted or len(wanted) > len(segments):
            continue
        if all(fnmatch.fnmatchcase(seg, pat) for seg, pat in zip(segments, wanted, strict=False)):
            return True
    return False


def open_for_fetch(path: str, max_bytes: int) -> tuple[int, int]:
    """(descriptor, size) of the regular file at the resolved ``path``; FetchRefused otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FetchRefused("unreadable", f"cannot open {os.path.basename(path)}: {exc.strerror}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise FetchRefused("not_a_file", f"{os.path.basename(path)} is not a regular file")
    if info.st_size > max_bytes:
        os.close(fd)
        raise FetchRefused("too_large", f"{info.st_size} bytes exceeds the {max_bytes}-byte limit")
    return fd, info.st_size
