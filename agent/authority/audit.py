"""The device's own audit log: what this device decided about authority, kept on the device.

The server relays documents and tells the console what happened, but a compromised server could
also lie about it. So every decision the device takes about unattended access — a document
accepted or refused, a root or revocation list refused, an unattended session started or refused
— is written here first, with its reason, then reported.

Format: ``<state>/device-audit.jsonl``, append-only JSON lines (file mode 0600 in the 0700 state
directory). Each line carries ``prev``, the SHA-256 hex of the previous line's bytes (64 zeros for
the first), so editing, reordering or deleting a line breaks the chain from there on
(:func:`verify`). Peer-chosen strings are cut to :data:`MAX_FIELD` characters; JSON escapes
control characters, so no reported field can forge a line.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
#: Longest string kept in a field (reasons name documents and credentials; nothing needs more).
MAX_FIELD = 1000
#: How far back from the end the last line is looked for (lines are far shorter).
_TAIL = 64 * 1024


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_FIELD]
    if isinstance(value, list | tuple):
        return [_bounded(v) for v in value[:64]]
    if isinstance(value, dict):
        return {str(k)[:64]: _bounded(v) for k, v in list(value.items())[:64]}
    if isinstance(value, bool | int | float) or value is None:
        return value
    return str(value)[:MAX_FIELD]


def line_hash(line: bytes) -> str:
    """What the next line's ``prev`` must be: SHA-256 hex of a line without its newline."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class DeviceAudit:
    """Append-only, hash-chained JSON lines at ``path`` (created 0600)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._prev = self._last_hash()

    def _last_hash(self) -> str:
        try:
            with self.path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - _TAIL))
                tail = f.read()
        except FileNotFoundError:
            return GENESIS
        lines = [line for line in tail.split(b"\n") if line.strip()]
        return line_hash(lines[-1]) if lines else GENESIS

    def record(self, event: str, **details: Any) -> dict[str, Any]:
        """Append one entry (``event`` plus ``details``) and return it as written."""
        entry = {"ts": round(self._clock(), 3), "event": event, **{k: _bounded(v) for k, v in details.items()},
                 "prev": self._prev}
        line = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        self._prev = line_hash(line)
        return entry

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every entry, oldest first (a test's and an administrator's read)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for line in data.splitlines():
            if line.strip():
                yield json.loads(line)


@dataclass(frozen=True)
class ChainCheck:
    """Whether the log is intact; ``problem`` names the first broken line."""

    intact: bool
    lines: int
    problem: str = ""


def verify(path: Path) -> ChainCheck:
    """Walk the chain from the first line; the first line whose ``prev`` does not match breaks it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ChainCheck(True, 0)
    prev, count = GENESIS, 0
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            return ChainCheck(False, count, f"line {number} is not JSON")
        if not isinstance(entry, dict) or entry.get("prev") != prev:
            return ChainCheck(False, count, f"line {number} does not follow line {number - 1} (edited, removed or "
                                            "reordered)")
        prev, count = line_hash(line), count + 1
    return ChainCheck(True, count)
