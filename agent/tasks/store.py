"""The task ledger, the replay ledger and the results outbox: one small SQLite file in the agent's state dir.

Every run is recorded when it arrives; its result is written in the same row before it is
sent and stays marked unacknowledged until the server's ``task.result.ack``, so a result
survives disconnects, agent restarts and SIGKILL (SQLite WAL, synchronous=FULL). Kept apart
from the health outbox on purpose.

The replay ledger (``occurrences``) holds one row per occurrence of a signed task that started
here (``document@once`` or ``document@epoch``, :func:`protocol.authority.occurrence_key`),
claimed in one statement before the action starts: a second run of the same occurrence — a
replay by the server, a re-sent run under a new id, after a restart — finds the row and is
refused. A row is kept until its document has expired, after which no run of it is honoured
anyway.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: Finished and acknowledged runs are remembered this long (so a re-sent task.run is not re-run).
KEEP_DONE_S = 30 * 86400
#: Occurrences are kept this long past their document's expiry (clock skew, nothing more is needed).
KEEP_OCCURRENCE_S = 86400


@dataclass(frozen=True)
class PendingArtifact:
    """A file a run produced that still has to reach the server."""

    run_id: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class LedgerRow:
    run_id: str
    message: str
    state: str  # waiting | running | done
    result: str | None
    acked: bool


class TaskLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, message TEXT NOT NULL, state TEXT NOT NULL,"
            " result TEXT, acked INTEGER NOT NULL DEFAULT 0, received_at REAL NOT NULL, updated_at REAL NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS artifacts (run_id TEXT PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL,"
            " sha256 TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', reason TEXT NOT NULL DEFAULT '',"
            " updated_at REAL NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS occurrences (occurrence TEXT PRIMARY KEY, run_id TEXT NOT NULL,"
            " claimed_at REAL NOT NULL, keep_until REAL NOT NULL)")
        path.chmod(0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _row(self, values: tuple[str, str, str, str | None, int]) -> LedgerRow:
        return LedgerRow(values[0], values[1], values[2], values[3], bool(values[4]))

    def get(self, run_id: str) -> LedgerRow | None:
        with self._lock:
            cur = self._db.execute("SELECT run_id, message, state, result, acked FROM runs WHERE run_id = ?",
                                   (run_id,))
            found = cur.fetchone()
        return self._row(found) if found else None

    def add(self, run_id: str, message: str, state: str) -> bool:
        """Record a new run; False if it was already known."""
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO runs (run_id, message, state, received_at, updated_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id) DO NOTHING", (run_id, message, state, now, now))
            return cur.rowcount == 1

    def set_state(self, run_id: str, state: str) -> None:
        with self._lock:
            self._db.execute("UPDATE runs SET state = ?, updated_at = ? WHERE run_id = ? AND state != 'done'",
                             (state, time.time(), run_id))

    def finish(self, run_id: str, result: str, artifact: PendingArtifact | None = None) -> None:
        """Store the result, and the artifact to upload with it, in one transaction."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("UPDATE runs SET state = 'done', result = ?, acked = 0, updated_at = ?"
                                 " WHERE run_id = ?", (result, now, run_id))
                if artifact is not None:
                    self._db.execute("INSERT INTO artifacts (run_id, path, size, sha256, updated_at)"
                                     " VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                                     (run_id, str(artifact.path), artifact.size, artifact.sha256, now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def pending_artifacts(self) -> list[PendingArtifact]:
        with self._lock:
            cur = self._db.execute("SELECT run_id, path, size, sha256 FROM artifacts WHERE state = 'pending'"
                                   " ORDER BY updated_at")
            return [PendingArtifact(r[0], Path(r[1]), r[2], r[3]) for r in cur.fetchall()]

    def artifact_state(self, run_id: str) -> tuple[str, str] | None:
        """(state, reason) of a run's artifact: pending, stored or refused."""
        with self._lock:
            found = self._db.execute("SELECT state, reason FROM artifacts WHERE run_id = ?", (run_id,)).fetchone()
        return (found[0], found[1]) if found else None

    def set_artifact_state(self, run_id: str, state: str, reason: str = "") -> None:
        with self._lock:
            self._db.execute("UPDATE artifacts SET state = ?, reason = ?, updated_at = ? WHERE run_id = ?",
                             (state, reason, time.time(), run_id))

    def ack(self, run_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("UPDATE runs SET acked = 1, updated_at = ? WHERE run_id = ? AND state = 'done'",
                                   (time.time(), run_id))
            return cur.rowcount == 1

    def unacked_results(self) -> list[tuple[str, str]]:
        with self._lock:
            cur = self._db.execute("SELECT run_id, result FROM runs WHERE state = 'done' AND acked = 0"
                                   " ORDER BY updated_at")
            return [(r[0], r[1]) for r in cur.fetchall()]

    def unfinished(self) -> list[LedgerRow]:
        with self._lock:
            cur = self._db.execute("SELECT run_id, message, state, result, acked FROM runs WHERE state != 'done'"
                                   " ORDER BY received_at")
            return [self._row(r) for r in cur.fetchall()]

    def prune(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        cutoff = now - KEEP_DONE_S
        with self._lock:
            cur = self._db.execute("DELETE FROM runs WHERE state = 'done' AND acked = 1 AND updated_at < ?",
                                   (cutoff,))
            self._db.execute("DELETE FROM artifacts WHERE state != 'pending' AND updated_at < ?", (cutoff,))
            self._db.execute("DELETE FROM occurrences WHERE keep_until < ?", (now,))
            return cur.rowcount

    # --- the replay ledger ---------------------------------------------------------------------

    def claim(self, occurrence: str, run_id: str, *, expires_at: float) -> str | None:
        """Record that ``run_id`` runs ``occurrence`` now; returns the run that claimed it first when it
        was claimed already (then nothing may run), None when this run has it."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO occurrences (occurrence, run_id, claimed_at, keep_until) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (occurrence) DO NOTHING",
                (occurrence, run_id, time.time(), expires_at + KEEP_OCCURRENCE_S))
            if cur.rowcount == 1:
                return None
            found = self._db.execute("SELECT run_id FROM occurrences WHERE occurrence = ?", (occurrence,)).fetchone()
        return str(found[0]) if found else "another run"

    def has_occurrence(self, occurrence: str) -> bool:
        with self._lock:
            found = self._db.execute("SELECT 1 FROM occurrences WHERE occurrence = ?", (occurrence,)).fetchone()
        return found is not None

    def occurrences(self) -> Occurrences:
        """The replay ledger as a container of occurrence keys (what check_occurrence asks)."""
        return Occurrences(self)


class Occurrences:
    """``key in ledger.occurrences()``: has this occurrence started on this device?"""

    def __init__(self, ledger: TaskLedger) -> None:
        self._ledger = ledger

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._ledger.has_occurrence(key)
