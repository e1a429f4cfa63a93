"""The device's open help requests, kept across agent restarts.

``<state>/help-requests.json`` (0600, written atomically) holds, per request, the ``local_id``
the agent made up (the server's idempotency key), who asked (uid and name: each user sees only
their own), what the server last said (``request.status``), and what is still to be sent: the
``request.open`` itself until the server's first status for it arrives (so a request made
offline, or lost with a connection, is sent again — the same ``local_id`` never makes a second
request), and notes/withdrawals until the server acknowledges them (``request.ack``). Closed
requests are forgotten a week after
their last change; at most :data:`MAX_ENTRIES` are kept.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import msgspec

from common.files import atomic_write
from protocol.requests import OPEN_STATES, RequestStatus

log = logging.getLogger(__name__)

FILE_NAME = "help-requests.json"
MAX_ENTRIES = 64
#: Open requests one user may hold at once (more are refused: ask in the one already open).
MAX_OPEN_PER_USER = 8
FORGET_AFTER_S = 7 * 86400.0


class Entry(msgspec.Struct, kw_only=True):
    local_id: str
    uid: int
    requester: str
    summary: str
    urgency: str
    created_at: float
    #: "sending" until the server's first status, then its state; "failed" when the server refused the open
    #: (``note`` says why; not sent again).
    state: str = "sending"
    request_id: str = ""
    number: int | None = None
    claimed_by: str = ""
    note: str = ""
    updated_at: float = 0.0
    #: The encoded ``request.open``, sent on every connection until the server's first status for it.
    pending_open: str = ""
    #: Notes and the withdrawal (encoded, their message ids fixed), resent on every connection until acked.
    outbox: list[str] = []

    @property
    def open(self) -> bool:
        return self.state == "sending" or self.state in OPEN_STATES


class Saved(msgspec.Struct, kw_only=True):
    entries: list[Entry] = []
    #: Other messages to send once (self-service outcomes made while offline).
    outbox: list[str] = []


class Book:
    """The requests, loaded once and written after every change."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        saved = self._load()
        self.entries: dict[str, Entry] = {e.local_id: e for e in saved.entries}
        self.outbox: list[str] = saved.outbox

    def _load(self) -> Saved:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=Saved)
        except FileNotFoundError:
            return Saved()
        except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            log.error("help requests file %s unreadable; starting empty: %s", self.path, exc)
            return Saved()

    def save(self) -> None:
        saved = Saved(entries=list(self.entries.values()), outbox=self.outbox[-MAX_ENTRIES:])
        atomic_write(self.path, msgspec.json.encode(saved), 0o600)

    @staticmethod
    def new_local_id() -> str:
        return uuid.uuid4().hex

    def open_count(self, uid: int) -> int:
        return sum(1 for e in self.entries.values() if e.uid == uid and e.open)

    def add(self, entry: Entry, now: float) -> None:
        self.entries[entry.local_id] = entry
        self.prune(now)
        self.save()

    def of(self, uid: int | None) -> list[Entry]:
        """One user's requests (``None``: everyone's), newest first."""
        found = [e for e in self.entries.values() if uid is None or e.uid == uid]
        return sorted(found, key=lambda e: e.created_at, reverse=True)

    def apply(self, status: RequestStatus) -> Entry | None:
        """The server's word on a request; None when it is not one of ours (ignored)."""
        entry = self.entries.get(status.local_id)
        if entry is None:
            return None
        if entry.state != "sending" and status.updated_at and status.updated_at < entry.updated_at:
            return entry  # an older status overtaken by a newer one
        entry.state, entry.request_id, entry.number = status.state, status.request_id, status.number
        entry.claimed_by, entry.note, entry.updated_at = status.claimed_by, status.note, status.updated_at
        entry.pending_open = ""
        self.save()
        return entry

    def prune(self, now: float) -> None:
        for local_id, entry in list(self.entries.items()):
            if not entry.open and now - max(entry.updated_at, entry.created_at) > FORGET_AFTER_S:
                del self.entries[local_id]
        if len(self.entries) > MAX_ENTRIES:
            oldest = sorted(self.entries.values(), key=lambda e: (e.open, e.created_at))
            for entry in oldest[:len(self.entries) - MAX_ENTRIES]:
                del self.entries[entry.local_id]
