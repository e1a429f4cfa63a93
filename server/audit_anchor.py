"""The audit chain's head kept outside the database: deleting the newest records is detected.

The hash chain (:mod:`server.audit`) shows any record altered or removed *before* the last
one, but whoever can delete rows can delete the newest ones and leave a shorter chain that
still verifies. So the head — sequence number and hash of the newest committed record — is
also appended to ``audit-anchor`` in the data directory (0600; one ``SEQ HASH`` line per
advance, compacted to its newest line past :data:`COMPACT_AT` bytes). ``helpline admin audit
verify`` then reports a log that ends before the anchor's head ("truncated"), or whose record
at the anchor's sequence has another hash (rewritten from there back).

Only committed heads are written (read back after the commit), so a crash can leave the
anchor behind the log — never ahead of it, which is what would raise a false alarm. The
anchor defends against an attacker who can change the database but not this file (a database
account, a restored or stolen copy, SQL access on a PostgreSQL host); one who owns the data
directory can rewrite both.

Several server nodes sharing PostgreSQL: each node keeps its own anchor of the heads it saw
after its own appends and once a second (:func:`server.audit.keep_anchored`), so each anchor
covers every record up to the newest one that node anchored — including other nodes' records
before it. Truncation below any node's anchor is detected by verifying against that node's
file (``verify --anchor PATH`` reads a copy from another node).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from common.files import atomic_write

#: File name of the anchor in the data directory.
ANCHOR_FILE = "audit-anchor"
#: Past this size the file is rewritten to its newest line.
COMPACT_AT = 1024 * 1024
_LINE = re.compile(r"^(\d{1,19}) ([0-9a-f]{64})$")


@dataclass(frozen=True)
class Head:
    """The newest record a reader of the log must find: its sequence number and hash."""

    seq: int
    hash: str


def read_head(path: Path) -> Head | None:
    """The highest head in an anchor file; None when there is none (a torn last line is ignored)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    best: Head | None = None
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match and (best is None or int(match.group(1)) > best.seq):
            best = Head(int(match.group(1)), match.group(2))
    return best


class AuditAnchor:
    """Appends each new committed head to the anchor file (thread-safe; file I/O, call off the loop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._last: int | None = None
        #: The last attempt to advance failed (the caller logs the first failure only).
        self.failing = False

    def advance(self, head: Head) -> bool:
        """Record ``head`` if it is newer than every head recorded; True if written."""
        with self._lock:
            if self._last is None:
                known = read_head(self.path)
                self._last = known.seq if known else 0
            if head.seq <= self._last:
                return False
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.fchmod(fd, 0o600)
                end = os.fstat(fd).st_size
                torn = end > 0 and os.pread(fd, 1, end - 1) != b"\n"  # a write cut short by a crash
                os.write(fd, (b"\n" if torn else b"") + f"{head.seq} {head.hash}\n".encode())
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            self._last = head.seq
            if size > COMPACT_AT:
                newest = read_head(self.path) or head
                atomic_write(self.path, f"{newest.seq} {newest.hash}\n", 0o600)
            return True
