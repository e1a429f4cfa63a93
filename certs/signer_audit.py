"""The node signer's audit trail: every issuance, refusal and allow-list change, hash-chained, append-only.

``nodes.json`` says who may renew now; it forgets who was issued what, who was refused and when a node
was added or removed. This file keeps that: ``audit.jsonl`` beside the signer's state, one JSON object per
line — ``seq``, ``ts``, ``event``, ``node`` and the event's fields, ``prev`` (the previous record's hash)
and ``hash`` (SHA-256 over the record's canonical JSON without ``hash``) — so changing or removing a line
breaks the chain from there (:func:`verify`), as the server's audit log does (server/audit.py, which
``certs/`` cannot import). Appends from the signer and from ``certs signer add-node``/``remove-node`` (other
processes) serialize on an ``flock`` of the file itself and are fsynced before the caller goes on.

Never in a record: keys, CSRs, signatures, enrolment tokens — only names, serials, dates, reasons and the
peer's address. Removing the *newest* lines leaves a shorter chain that still links: keep a copy of the
last hash elsewhere (``helpline certs signer audit`` prints it) to notice that.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AUDIT_FILE = "audit.jsonl"
GENESIS = "0" * 64
#: A record's longest text value (a node name the peer sent is cut to it).
MAX_VALUE = 200
#: Refusals written per peer per :data:`REFUSAL_WINDOW_S`; past it they are counted and the count goes in the
#: peer's next written refusal (``suppressed``), so a peer hammering the signer cannot fill its disk.
REFUSALS_PER_WINDOW = 30
REFUSAL_WINDOW_S = 60.0
#: How far back from the end the last record is looked for (records are well under 1 KiB).
_TAIL = 64 * 1024
_SECRET_FIELDS = frozenset({"token", "csr", "signature", "key", "current", "passphrase"})


class AuditError(ValueError):
    """The audit file is not a valid chain (the message says which line and why)."""


def audit_path(directory: Path) -> Path:
    return Path(directory) / AUDIT_FILE


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON, its ``hash`` left out."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_VALUE]
    if isinstance(value, list):
        return [_clean(v) for v in value[:32]]
    return value


def append(directory: Path, event: str, node: str, **fields: Any) -> dict[str, Any]:
    """Append one record (fsynced) and return it. ``fields`` must not name secrets (refused: ValueError)."""
    secret = _SECRET_FIELDS & fields.keys()
    if secret:
        raise ValueError(f"the signer's audit never records {', '.join(sorted(secret))}")
    path = audit_path(directory)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
        last = _last_record(fd)
        record: dict[str, Any] = {"seq": (int(last["seq"]) + 1) if last else 1, "ts": time.time(),
                                  "event": event, "node": _clean(node),
                                  **{k: _clean(v) for k, v in fields.items() if v is not None},
                                  "prev": str(last["hash"]) if last else GENESIS}
        record["hash"] = record_hash(record)
        line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return record


def _last_record(fd: int) -> dict[str, Any] | None:
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    start = max(0, size - _TAIL)
    tail = os.pread(fd, size - start, start)
    lines = tail.rstrip(b"\n").split(b"\n")
    try:
        last = json.loads(lines[-1])
    except ValueError as exc:
        raise AuditError(f"the last line of {AUDIT_FILE} is not a record: repair the file before appending") from exc
    if not isinstance(last, dict) or "hash" not in last or "seq" not in last:
        raise AuditError(f"the last line of {AUDIT_FILE} is not a record")
    return last


def records(directory: Path) -> Iterator[dict[str, Any]]:
    """Every record, oldest first (none when there is no file yet); AuditError on a line that is not JSON."""
    path = audit_path(directory)
    if not path.exists():
        return
    with path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            try:
                record = json.loads(raw)
            except ValueError as exc:
                raise AuditError(f"line {number}: not JSON") from exc
            if not isinstance(record, dict):
                raise AuditError(f"line {number}: not a record")
            yield record


def verify(directory: Path) -> tuple[int, str]:
    """Check the whole chain: (number of records, last hash). AuditError names the first broken line."""
    prev, count = GENESIS, 0
    for number, record in enumerate(records(directory), 1):
        if record.get("seq") != number:
            raise AuditError(f"line {number}: sequence {record.get('seq')!r}, expected {number}")
        if record.get("prev") != prev:
            raise AuditError(f"line {number}: does not follow the line before it (a line removed or changed)")
        if record.get("hash") != record_hash(record):
            raise AuditError(f"line {number}: its hash does not match its content (the line was changed)")
        prev, count = str(record["hash"]), number
    return count, prev


@dataclass
class RefusalThrottle:
    """How many refusals each peer has had written in the current window, and how many were left out."""

    per_window: int = REFUSALS_PER_WINDOW
    window_s: float = REFUSAL_WINDOW_S
    _peers: dict[str, tuple[float, int, int]] = field(default_factory=dict)

    def admit(self, peer: str, now: float) -> int | None:
        """None: leave this refusal out. Else the number left out before it (to record with it)."""
        start, written, suppressed = self._peers.get(peer, (now, 0, 0))
        if now - start >= self.window_s:
            start, written = now, 0
        if written >= self.per_window:
            self._peers[peer] = (start, written, suppressed + 1)
            return None
        self._peers[peer] = (start, written + 1, 0)
        if len(self._peers) > 10_000:  # many peers: forget the oldest windows
            for old in sorted(self._peers, key=lambda p: self._peers[p][0])[:5_000]:
                del self._peers[old]
        return suppressed
