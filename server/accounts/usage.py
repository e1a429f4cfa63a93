"""When API tokens and console sessions were last used: kept in memory, written in batches.

Checking a token or a cookie used to write ``last_used`` / ``last_seen`` on the request itself,
so with a database that cannot take writes (its disk full) every GET failed with 500. Now a
check only reads; :class:`UsageLedger` remembers the newest use of each token and session and a
background task writes them all in one batch every ``auth_usage_flush_s``. A failed flush keeps
the entries (merged with newer uses), is logged once per outage and retried at the next
interval; no request ever waits for it or fails because of it.

A session's idle timeout is checked against the newer of the stored and the remembered time, so
a session in use does not expire on this node while flushes fail; other nodes see the stored time,
at most one flush interval behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from common.outage import OutageLog

from ..store import Database

log = logging.getLogger(__name__)


class UsageLedger:
    """Newest use of each token and session not yet written to the database."""

    def __init__(self) -> None:
        self._tokens: dict[str, float] = {}
        self._sessions: dict[str, float] = {}
        self._outage = OutageLog(log, "writing token and session last-use times")

    def token_used(self, token_id: str, at: float) -> None:
        self._tokens[token_id] = max(at, self._tokens.get(token_id, at))

    def session_seen(self, session_id: str, at: float) -> None:
        self._sessions[session_id] = max(at, self._sessions.get(session_id, at))

    def token_last_used(self, token_id: str, stored: float | None) -> float | None:
        """The newer of the stored time and a use not yet written."""
        pending = self._tokens.get(token_id)
        return pending if stored is None or (pending is not None and pending > stored) else stored

    def session_last_seen(self, session_id: str, stored: float) -> float:
        pending = self._sessions.get(session_id)
        return pending if pending is not None and pending > stored else stored

    @property
    def failed_flushes(self) -> int:
        """Consecutive failed flushes (0 once one succeeds)."""
        return self._outage.failures

    def __len__(self) -> int:
        return len(self._tokens) + len(self._sessions)

    async def flush(self, db: Database) -> bool:
        """Write every remembered use in one transaction; on failure keep them and return False."""
        tokens, sessions = self._tokens, self._sessions
        if not tokens and not sessions:
            return True
        self._tokens, self._sessions = {}, {}
        try:
            async with db.transaction() as tx:
                # Never move a time backwards (another node may have written a newer one).
                if tokens:
                    await tx.executemany("UPDATE api_tokens SET last_used = ? WHERE id = ?"
                                         " AND (last_used IS NULL OR last_used < ?)",
                                         [(at, tid, at) for tid, at in tokens.items()])
                if sessions:
                    await tx.executemany("UPDATE console_sessions SET last_seen = ? WHERE id = ? AND last_seen < ?",
                                         [(at, sid, at) for sid, at in sessions.items()])
        except Exception as exc:
            for tid, at in tokens.items():
                self.token_used(tid, at)
            for sid, at in sessions.items():
                self.session_seen(sid, at)
            self._outage.failed(exc)
            return False
        self._outage.succeeded()
        return True

    async def run(self, db: Callable[[], Database], interval_s: float) -> None:
        """Flush every ``interval_s`` until cancelled; a last flush on the way out."""
        try:
            while True:
                await asyncio.sleep(interval_s)
                await self.flush(db())
        finally:
            await self.flush(db())
