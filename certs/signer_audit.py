"""The node signer's audit trail: every issuance, refusal and allow-list change, hash-chained, append-only.

``nodes.json`` says who may renew now; it forgets who was issued what, who was refused and when a node
was added or removed. This file keeps that: ``audit.jsonl`` beside the signer's state, one JSON object per
line — ``seq``, ``ts``, ``event``, ``node`` and the event's fields, ``prev`` (the previous record's hash)
and ``hash`` (SHA-256 over the record's canonical JSON without ``hash``) — so changing or removing a line
breaks the chain from there (:func:`verify`), as the server's audit log does (server/audit.py, which
``certs/`` cannot import). Appends from the signer and from ``certs signer add-node``/``remove-node`` (other
processes) serialize on an ``flock`` of the file itself and are fsynced before the caller goes on.

Never in a record: keys, CSRs, signatures, enrolment tokens — only names, serials, dates, reasons and the
peer's address. The chain is not keyed: whoever can write the file can recompute it from any line on, and
removing the *newest* lines leaves a shorter chain that still links; so ship the head elsewhere
(``helpline certs signer audit --head``) to notice either.

The file is begun by ``certs delegate`` and ``signer serve`` (a ``delegated``/``started`` record), the only
writers allowed to create it (and ``audit --begin``, once, for a signer made before the trail): a missing or
emptied file where ``nodes.json`` names nodes, or one whose record 1 is no such beginning, is refused by
:func:`verify`, :func:`begin` and :func:`append` rather than taken for an empty trail. A torn last line (a crash
or a full disk mid-write) makes :func:`append` refuse (:class:`TornTail`) until :func:`repair` cuts it off and records
that it did (``helpline certs signer audit --repair``).
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import math
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
#: Refusals written per window from all peers together (many addresses cannot fill the disk either); past it
#: they are counted and the count goes in the next one written (``suppressed_all``).
REFUSALS_ALL_PER_WINDOW = 300
REFUSAL_WINDOW_S = 60.0
#: How far back from the end the last record is looked for (records are well under 1 KiB).
_TAIL = 64 * 1024
_SECRET_FIELDS = frozenset({"token", "csr", "signature", "key", "current", "passphrase"})


class AuditError(ValueError):
    """The audit file is not a valid chain, or missing where it must exist (the message says which and why)."""


class TornTail(AuditError):
    """The last line is not a whole record (a write cut short): nothing is appended until it is repaired."""


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


def _has_nodes(directory: Path) -> bool:
    """Whether the signer's allow-list (``nodes.json``) names any node: then an audit file must exist."""
    try:
        return bool(json.loads((Path(directory) / "nodes.json").read_text()))
    except FileNotFoundError:
        return False
    except ValueError as exc:
        raise AuditError(f"nodes.json is not JSON: {exc}") from exc


def _missing(directory: Path) -> AuditError:
    return AuditError(f"{audit_path(directory)} is missing but nodes.json names nodes: if this signer predates the "
                      f"audit trail, run 'helpline certs signer audit --dir {directory} --begin'; if the file was "
                      "removed, restore it from a backup (a new one would hide what it held)")


#: The events a trail may begin with (the only writers that create the file).
FIRST_EVENTS = frozenset({"delegated", "started", "begun"})


def _check_first(directory: Path, first: dict[str, Any] | None) -> None:
    """While ``nodes.json`` names nodes the trail must hold records, the first a beginning (:data:`FIRST_EVENTS`):
    an emptied file, or one cut to start mid-chain, is refused like a removed one rather than begun afresh."""
    if first is not None and first.get("event") in FIRST_EVENTS and first.get("seq") == 1:
        return
    if not _has_nodes(directory):
        return
    if first is None:
        raise AuditError(f"{audit_path(directory)} is empty but nodes.json names nodes: the trail was emptied "
                         "(restore it from a backup; a new chain would hide what it held)")
    raise AuditError(f"{audit_path(directory)} does not begin with a 'delegated', 'started' or 'begun' record "
                     "(record 1 is {!r}): lines were cut from its start; restore it from a backup"
                     .format(first.get("event")))


def _first_record(fd: int) -> dict[str, Any] | None:
    """Record 1 of the open file (None when empty; a dict without ``event`` when line 1 is no record)."""
    head = os.pread(fd, _TAIL, 0)
    if not head:
        return None
    try:
        first = json.loads(head.split(b"\n", 1)[0])
    except ValueError:
        return {}
    return first if isinstance(first, dict) else {}


def begin_upgrade(directory: Path, by: str) -> dict[str, Any]:
    """Begin the trail of a signer directory made before the trail existed (``audit --begin``): a first ``begun``
    record naming the nodes already allowed and saying no earlier trail existed. Only where there is no file at
    all (O_EXCL: AuditError otherwise), so it can never start a second chain beside or over an existing one."""
    try:
        nodes = json.loads((Path(directory) / "nodes.json").read_text())
    except FileNotFoundError:
        nodes = {}
    except ValueError as exc:
        raise AuditError(f"nodes.json is not JSON: {exc}") from exc
    names = sorted(str(name) for name in nodes) if isinstance(nodes, dict) else []
    try:
        fd = os.open(audit_path(directory), os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AuditError(f"{audit_path(directory)} exists: --begin only starts a trail where there was none "
                         "(see --verify, or --repair for a torn last line)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _append_locked(fd, "begun", "", {"nodes": names, "node_count": len(names),
                                                "earlier_trail": False, "by": by})
    finally:
        os.close(fd)


def _open(directory: Path, *, create: bool) -> int:
    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        return os.open(audit_path(directory), flags, 0o600)
    except FileNotFoundError:
        if _has_nodes(directory):
            raise _missing(directory) from None
        raise AuditError(f"{audit_path(directory)} is missing: 'helpline certs signer serve' or 'certs delegate' "
                         "begins it") from None


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (a full disk, a signal): go on until all of it is written."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError("audit write made no progress")
        view = view[written:]


def _append_locked(fd: int, event: str, node: str, fields: dict[str, Any]) -> dict[str, Any]:
    last = _last_record(fd)
    record: dict[str, Any] = {"seq": (int(last["seq"]) + 1) if last else 1, "ts": time.time(),
                              "event": event, "node": _clean(node),
                              **{k: _clean(v) for k, v in fields.items() if v is not None},
                              "prev": str(last["hash"]) if last else GENESIS}
    record["hash"] = record_hash(record)
    _write_all(fd, (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode())
    os.fsync(fd)
    return record


def append(directory: Path, event: str, node: str, **fields: Any) -> dict[str, Any]:
    """Append one record (fsynced) and return it. ``fields`` must not name secrets (refused: ValueError); the
    file must exist (AuditError: see :func:`begin`), and end with a whole record (:class:`TornTail`)."""
    return _append(directory, event, node, fields, create=False)


def require(directory: Path) -> None:
    """AuditError when the file is missing, empty or cut at its start although ``nodes.json`` names nodes."""
    try:
        fd = os.open(audit_path(directory), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if _has_nodes(directory):
            raise _missing(directory) from None
        return
    try:
        _check_first(directory, _first_record(fd))
    finally:
        os.close(fd)


def begin(directory: Path, event: str, node: str = "", **fields: Any) -> dict[str, Any]:
    """Append ``event``, creating the file if there is none yet — unless ``nodes.json`` names nodes, when a
    missing file means a removed trail (AuditError). For ``certs delegate`` and the signer's start."""
    require(directory)
    return _append(directory, event, node, fields, create=True)


def _append(directory: Path, event: str, node: str, fields: dict[str, Any], *, create: bool) -> dict[str, Any]:
    secret = _SECRET_FIELDS & fields.keys()
    if secret:
        raise ValueError(f"the signer's audit never records {', '.join(sorted(secret))}")
    fd = _open(directory, create=create)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
        _check_first(directory, _first_record(fd))  # a file just begun is empty only where no node is allowed
        return _append_locked(fd, event, node, fields)
    finally:
        os.close(fd)


def repair(directory: Path, by: str) -> int:
    """Cut off a torn last line and record that (``repaired``, with the bytes dropped); 0 when the file ends with
    a whole record (nothing done). Only the last line: a broken line before it is no torn write (AuditError)."""
    fd = _open(directory, create=False)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _check_first(directory, _first_record(fd))  # repairing an emptied file would begin a new chain
        size = os.fstat(fd).st_size
        start = max(0, size - _TAIL)
        tail = os.pread(fd, size - start, start)
        body = tail[:-1] if tail.endswith(b"\n") else tail
        cut = body.rfind(b"\n") + 1  # where the last line begins, within tail
        if tail.endswith(b"\n") and _is_record(body[cut:]):
            return 0  # a record without its newline was never reported written (its caller failed): cut it too
        if cut and not _is_record(body[body.rfind(b"\n", 0, cut - 1) + 1:cut - 1]):
            raise AuditError("the line before the last is broken too: not a torn write; see --verify")
        os.ftruncate(fd, start + cut)
        os.fsync(fd)
        dropped = size - (start + cut)
        _append_locked(fd, "repaired", "", {"dropped_bytes": dropped, "by": by})
        return dropped
    finally:
        os.close(fd)


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and "hash" in record and "seq" in record


def _last_record(fd: int) -> dict[str, Any] | None:
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    start = max(0, size - _TAIL)
    tail = os.pread(fd, size - start, start)
    line = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    if not tail.endswith(b"\n") or not _is_record(line):
        raise TornTail(f"the last line of {AUDIT_FILE} is not a whole record (a write cut short): nothing is "
                       "issued until 'helpline certs signer audit --repair' cuts it off")
    last: dict[str, Any] = json.loads(line)
    return last


def records(directory: Path) -> Iterator[dict[str, Any]]:
    """Every record, oldest first (none when there is no file yet and no node on the allow-list; AuditError when
    nodes.json names nodes); AuditError on a line that is not JSON."""
    path = audit_path(directory)
    if not path.exists():
        if _has_nodes(directory):
            raise _missing(directory)
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
        if number == 1:
            _check_first(directory, record)
        if record.get("seq") != number:
            raise AuditError(f"line {number}: sequence {record.get('seq')!r}, expected {number}")
        if record.get("prev") != prev:
            raise AuditError(f"line {number}: does not follow the line before it (a line removed or changed)")
        if record.get("hash") != record_hash(record):
            raise AuditError(f"line {number}: its hash does not match its content (the line was changed)")
        prev, count = str(record["hash"]), number
    if count == 0 and audit_path(directory).exists():
        _check_first(directory, None)
    return count, prev


#: Refusals that may be an attack on a node's identity (a wrong key or unknown intermediate, a node not or no
#: longer allowed — a stolen intermediate's renewal): never left out by the global cap, and counted per peer apart
#: from the rest, so junk from the same or other addresses cannot use up their allowance.
SECURITY_CODES = frozenset({"bad_proof", "node_not_allowed"})
#: Peers named with their counts when the global cap left refusals out (``suppressed_top``).
TOP_SUPPRESSED = 5
_MAX_PEERS = 10_000


def peer_key(peer: str) -> str:
    """The key a peer is throttled under: IPv4 as is, IPv6 by its /64 (what one subscriber holds)."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return peer


@dataclass
class RefusalThrottle:
    """How many refusals each peer (IPv6 by /64), and all peers together, have had written in the current window,
    and how many were left out. Each peer may write :data:`REFUSALS_PER_WINDOW` refusals of :data:`SECURITY_CODES`
    and as many of the rest a window; the global cap (so many addresses cannot fill the disk) holds only the rest:
    a few addresses' junk cannot keep anyone's security-relevant refusal out of the trail."""

    per_window: int = REFUSALS_PER_WINDOW
    window_s: float = REFUSAL_WINDOW_S
    all_per_window: int = REFUSALS_ALL_PER_WINDOW
    _peers: dict[tuple[str, bool], tuple[float, int, int]] = field(default_factory=dict)
    _all: tuple[float, int, int] = (-math.inf, 0, 0)
    _all_left_out: dict[str, int] = field(default_factory=dict)

    def admit(self, peer: str, now: float, code: str = "") -> dict[str, Any] | None:
        """None: leave this refusal out. Else the counts left out before it, to record with it: ``suppressed``
        (this peer's, of this kind), ``suppressed_all`` (left out by the global cap) and ``suppressed_top`` (the
        peers the global cap left out most, ``peer=count``), each only when non-zero."""
        security = code in SECURITY_CODES
        key = (peer_key(peer), security)
        start, written, suppressed = self._peers.get(key, (now, 0, 0))
        if now - start >= self.window_s:
            start, written = now, 0
        all_start, all_written, all_suppressed = self._all
        if now - all_start >= self.window_s:
            all_start, all_written = now, 0
        if written >= self.per_window:
            self._peers[key] = (start, written, suppressed + 1)
            return None
        if not security and all_written >= self.all_per_window:
            self._all = (all_start, all_written, all_suppressed + 1)
            if key[0] in self._all_left_out or len(self._all_left_out) < _MAX_PEERS:
                self._all_left_out[key[0]] = self._all_left_out.get(key[0], 0) + 1
            return None
        self._peers[key] = (start, written + 1, 0)
        if len(self._peers) > _MAX_PEERS:  # many peers: forget the oldest windows
            for old in sorted(self._peers, key=lambda p: self._peers[p][0])[:_MAX_PEERS // 2]:
                del self._peers[old]
        counts: dict[str, Any] = {"suppressed": suppressed} if suppressed else {}
        if security:
            return counts
        self._all = (all_start, all_written + 1, 0)
        if all_suppressed:
            top = sorted(self._all_left_out.items(), key=lambda item: (-item[1], item[0]))[:TOP_SUPPRESSED]
            counts.update(suppressed_all=all_suppressed, suppressed_top=[f"{p}={n}" for p, n in top])
            self._all_left_out.clear()
        return counts
