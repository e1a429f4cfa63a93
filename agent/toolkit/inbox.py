"""A technician's file, written into the user's Downloads folder as it arrives — by the user's own process.

Runs where the screen session runs: in the session helper (as the logged-in user) on an
installed device, so the file is the user's by construction and root never writes into a home.
Everything happens relative to one descriptor of the folder, opened without following a
symlink (a symlinked Downloads is refused): the partial file ``.helpline-<hash>-<size>.part`` is
opened with ``O_NOFOLLOW`` and must be a plain file of ours with one link; the final name is the
sender's name reduced to a plain last component (:func:`agent.desktop.downloads.plain_name`)
and is made with ``link()``, which never overwrites and never follows a pre-created symlink
(``name (1).ext``… when taken). The declared size is a hard limit: one byte more and the
partial file is deleted; the SHA-256 of the whole file must match before it gets its name.
An interrupted transfer keeps its partial file, so the same file offered again resumes
where the last acknowledged chunk ended.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..desktop.downloads import MAX_TRIES, plain_name

#: Bytes hashed per read when resuming.
READ_BLOCK = 1024 * 1024


class InboxRefused(Exception):
    """The file cannot be taken; ``code`` is machine-readable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def open_folder(folder: Path) -> int:
    """A descriptor of ``folder`` (created 0700 when missing), refusing a symlink or anything not a directory."""
    try:
        with contextlib.suppress(FileExistsError):  # a symlink to nowhere, or a file: refused just below
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InboxRefused("folder_unusable", f"cannot create {folder.name}: {exc.strerror}") from exc
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise InboxRefused("folder_unsafe", f"{folder.name} is a symbolic link or not a folder") from exc
        raise InboxRefused("folder_unusable", f"cannot open {folder.name}: {exc.strerror}") from exc


@dataclass
class Incoming:
    """One file being received into the folder ``dir_fd``."""

    dir_fd: int
    name: str
    size: int
    sha256: str
    fd: int = -1
    offset: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)

    @property
    def part_name(self) -> str:
        return f".helpline-{self.sha256[:16]}-{self.size}.part"

    def open(self) -> int:
        """Open (or resume) the partial file; returns the offset to continue from."""
        try:
            self.fd = os.open(self.part_name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                              dir_fd=self.dir_fd)
        except OSError as exc:
            code = "target_unsafe" if exc.errno == errno.ELOOP else "write_failed"
            raise InboxRefused(code, f"cannot open the partial file: {exc.strerror}") from exc
        info = os.fstat(self.fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid != os.geteuid():
            self.discard(unlink=False)
            raise InboxRefused("target_unsafe", "the partial file is not a plain file of this user's")
        if info.st_size > self.size:
            os.ftruncate(self.fd, 0)
        done = min(info.st_size, self.size)
        position = 0
        while position < done:  # the hash covers the whole file: read back what a drop left
            block = os.pread(self.fd, min(READ_BLOCK, done - position), position)
            if not block:
                break
            self.hasher.update(block)
            position += len(block)
        self.offset = position
        return self.offset

    def write(self, offset: int, data: bytes) -> int:
        """Write the next chunk; returns the new offset. A gap, an overlap or a byte past the size is refused."""
        if offset != self.offset:
            raise InboxRefused("bad_offset", f"chunk at {offset}, expected {self.offset}")
        if self.offset + len(data) > self.size:
            self.discard()
            raise InboxRefused("size_mismatch", f"more bytes than the declared {self.size}")
        written = 0
        while written < len(data):
            written += os.pwrite(self.fd, data[written:], offset + written)
        self.hasher.update(data)
        self.offset += len(data)
        return self.offset

    def finish(self) -> str:
        """All bytes are here: check the hash, give the file its name (never overwriting); returns that name."""
        if self.offset != self.size:
            raise InboxRefused("size_mismatch", f"{self.offset} bytes of the declared {self.size}")
        if self.hasher.hexdigest() != self.sha256:
            self.discard()
            raise InboxRefused("sha256_mismatch", "the file's SHA-256 does not match the declared one")
        os.fsync(self.fd)
        base = plain_name(self.name)
        stem, dot, suffix = base.rpartition(".")
        if not stem:
            stem, dot, suffix = base, "", ""
        for attempt in range(MAX_TRIES):
            candidate = base if attempt == 0 else f"{stem} ({attempt}){dot}{suffix}"
            try:
                os.link(self.part_name, candidate, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd,
                        follow_symlinks=False)
            except FileExistsError:
                continue
            self.discard()
            return candidate
        raise InboxRefused("name_taken", f"{MAX_TRIES} files named like {base!r} already exist")

    def close(self) -> None:
        """Stop without deleting the partial file (a later offer of the same file resumes it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self, unlink: bool = True) -> None:
        self.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.part_name, dir_fd=self.dir_fd)


def usable_folder(clean: str) -> Path:
    """The folder the user picked (already resolved: absolute, no symlink in it) if it is one this user may write."""
    try:
        info = os.stat(clean, follow_symlinks=False)
    except OSError as exc:
        raise InboxRefused("folder_unusable", f"{clean}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise InboxRefused("folder_unusable", f"{clean} is not a folder")
    if not os.access(clean, os.W_OK | os.X_OK):
        raise InboxRefused("folder_unusable", f"you cannot write in {clean}")
    return Path(clean)


def free_bytes(dir_fd: int) -> int:
    info = os.statvfs(dir_fd)
    return info.f_bavail * info.f_frsize
