"""The agent's on-disk outbox (SQLite): store-and-forward for health samples.

Every message gets a sequence number that only grows (``AUTOINCREMENT`` never reuses one,
even after deletes) and stays on disk until the server acknowledges it (``ack(up_to)``),
so a crash, a SIGKILL or a week offline loses nothing. The outbox is bounded: when full,
the oldest messages are dropped, counted and recorded as a gap that is itself sent to the
server — data may be lost to the bound, but never silently.

The methods are blocking (small local writes); the async agent calls them through
``asyncio.to_thread``. One lock serializes access from those threads.

An item the server refuses is not kept for ever either: :meth:`Outbox.discard` deletes it and
counts it (``rejected.<kind>``), and :meth:`Outbox.repair` rewrites one in place (trimmed to the
size limit) — both on the agent's decision, logged with the reason by the caller.

Seqs are per device on the server too. If this file is lost while the device keeps its
identity, a fresh outbox would start again at 1 and the server would take the new samples
for duplicates; :meth:`Outbox.renumber_above` moves everything above the server's highest
seq (the agent calls it with ``welcome.health_seq`` before sending anything).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        ts REAL NOT NULL,
        body TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS gaps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        from_seq INTEGER NOT NULL,
        to_seq INTEGER NOT NULL,
        dropped INTEGER NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
]


@dataclass(frozen=True)
class Item:
    seq: int
    kind: str
    ts: float
    body: dict[str, Any]


@dataclass(frozen=True)
class Gap:
    id: int
    from_seq: int
    to_seq: int
    dropped: int


class Outbox:
    def __init__(self, path: Path, *, max_items: int) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.path = path
        self.max_items = max_items
        self._lock = threading.Lock()
        self._closed = False
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._conn.execute(statement)

    def close(self) -> None:
        """Close the file; closing again does nothing."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def add(self, kind: str, body: dict[str, Any], ts: float) -> int:
        """Append one message; drop (and record) the oldest beyond the bound. Returns its seq."""
        with self._lock, self._conn:
            cur = self._conn.execute("INSERT INTO outbox (kind, ts, body) VALUES (?, ?, ?)",
                                     (kind, ts, json.dumps(body, separators=(",", ":"))))
            seq = int(cur.lastrowid or 0)
            (count,) = self._conn.execute("SELECT COUNT(*) FROM outbox WHERE kind = ?", (kind,)).fetchone()
            excess = count - self.max_items
            if excess > 0:
                self._drop_oldest(kind, excess)
            return seq

    def _drop_oldest(self, kind: str, n: int) -> None:
        low, high, dropped = self._conn.execute(
            "SELECT MIN(seq), MAX(seq), COUNT(*) FROM (SELECT seq FROM outbox WHERE kind = ? ORDER BY seq LIMIT ?)",
            (kind, n)).fetchone()
        self._conn.execute("DELETE FROM outbox WHERE kind = ? AND seq <= ?", (kind, high))
        last = self._conn.execute("SELECT id, to_seq FROM gaps WHERE kind = ? ORDER BY id DESC LIMIT 1",
                                  (kind,)).fetchone()
        below = self._conn.execute("SELECT COUNT(*) FROM outbox WHERE kind = ? AND seq < ?", (kind, low)).fetchone()
        if last is not None and last[1] < low and below[0] == 0:
            # Contiguous with the previous gap: widen it (re-sent if it was in flight; the server upserts).
            self._conn.execute("UPDATE gaps SET to_seq = ?, dropped = dropped + ? WHERE id = ?",
                               (high, dropped, last[0]))
        else:
            self._conn.execute("INSERT INTO gaps (kind, from_seq, to_seq, dropped) VALUES (?, ?, ?, ?)",
                               (kind, low, high, dropped))
        self._bump(f"dropped.{kind}", dropped)

    def _bump(self, name: str, n: int) -> None:
        self._conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE"
                           " SET value = value + excluded.value", (name, n))

    def pending(self, kind: str, limit: int) -> list[Item]:
        """The oldest unacknowledged messages, in seq order."""
        with self._lock:
            rows = self._conn.execute("SELECT seq, kind, ts, body FROM outbox WHERE kind = ? ORDER BY seq LIMIT ?",
                                      (kind, limit)).fetchall()
        return [Item(int(r[0]), str(r[1]), float(r[2]), json.loads(r[3])) for r in rows]

    def gaps(self, kind: str) -> list[Gap]:
        with self._lock:
            rows = self._conn.execute("SELECT id, from_seq, to_seq, dropped FROM gaps WHERE kind = ? ORDER BY id",
                                      (kind,)).fetchall()
        return [Gap(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]

    def ack(self, kind: str, up_to: int, gaps: Sequence[Gap] = ()) -> int:
        """The server stored everything up to ``up_to`` and the given gaps: delete them."""
        with self._lock, self._conn:
            deleted = self._conn.execute("DELETE FROM outbox WHERE kind = ? AND seq <= ?", (kind, up_to)).rowcount
            for gap in gaps:  # only if unchanged since sent; a widened gap is sent again
                self._conn.execute("DELETE FROM gaps WHERE id = ? AND to_seq = ? AND dropped = ?",
                                   (gap.id, gap.to_seq, gap.dropped))
        return int(deleted)

    def discard(self, kind: str, seq: int) -> bool:
        """Delete one message the server will not take (refused on its own) and count it as rejected."""
        with self._lock, self._conn:
            deleted = self._conn.execute("DELETE FROM outbox WHERE kind = ? AND seq = ?", (kind, seq)).rowcount
            if deleted:
                self._bump(f"rejected.{kind}", deleted)
        return bool(deleted)

    def count_rejected(self, kind: str, n: int) -> None:
        """Count ``n`` messages the server named as refused (its ack already covered their deletion)."""
        if n > 0:
            with self._lock, self._conn:
                self._bump(f"rejected.{kind}", n)

    def repair(self, kind: str, seq: int, body: dict[str, Any]) -> bool:
        """Replace a pending message's body (same seq and time), e.g. trimmed to fit the size limit."""
        with self._lock, self._conn:
            updated = self._conn.execute("UPDATE outbox SET body = ? WHERE kind = ? AND seq = ?",
                                         (json.dumps(body, separators=(",", ":")), kind, seq)).rowcount
            if updated:
                self._bump(f"repaired.{kind}", updated)
        return bool(updated)

    def last_seq(self) -> int:
        """The highest seq ever handed out (0 if none)."""
        with self._lock:
            row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return int(row[0]) if row else 0

    def renumber_above(self, floor: int) -> int:
        """If ``floor`` (the server's highest stored seq) is above every seq this outbox ever issued,
        shift every pending message and gap above it and continue numbering from there.

        Returns the shift (0 when nothing had to move: the normal case, where the server can't be
        ahead of us). Only a lost or replaced outbox file gets here, so everything it holds is newer
        than what the server stores.
        """
        with self._lock, self._conn:
            row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            last = int(row[0]) if row else 0
            if floor <= last:
                return 0
            shift = floor
            # Two steps so no intermediate seq collides with an existing primary key.
            self._conn.execute("UPDATE outbox SET seq = -(seq + ?)", (shift,))
            self._conn.execute("UPDATE outbox SET seq = -seq")
            self._conn.execute("UPDATE gaps SET from_seq = from_seq + ?, to_seq = to_seq + ?", (shift, shift))
            if row is None:
                self._conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (last + shift,))
            else:
                self._conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'outbox'", (last + shift,))
            return shift

    def count(self, kind: str) -> int:
        with self._lock:
            (n,) = self._conn.execute("SELECT COUNT(*) FROM outbox WHERE kind = ?", (kind,)).fetchone()
        return int(n)

    def dropped_total(self, kind: str) -> int:
        """Messages lost to the bound (reported as gaps)."""
        return self.counter(f"dropped.{kind}")

    def rejected_total(self, kind: str) -> int:
        """Messages the server refused, deleted by :meth:`discard` or counted by :meth:`count_rejected`."""
        return self.counter(f"rejected.{kind}")

    def counter(self, name: str) -> int:
        with self._lock:
            row = self._conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0


def max_items_for(days: float, interval_s: float) -> int:
    """How many samples ``days`` of history at ``interval_s`` is (at least 1)."""
    return max(1, int(days * 86400 / max(interval_s, 0.001)))
