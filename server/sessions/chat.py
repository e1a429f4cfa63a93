"""The chat transcript of a session, as the device showed it (``chat.message`` on the tunnel).

The relay hands every ``chat.message`` the agent sends to :func:`save_line`; the agent numbers
the lines, so a repeated or replayed line is stored once. A transcript is capped at
:data:`MAX_LINES` lines (a chatty session cannot fill the database). Lines are text, shown as
text by the console; PostgreSQL text cannot hold NUL, which the protocol already refuses.
"""

from __future__ import annotations

from protocol.toolkit import ChatMessage
from server.store import Database, Row
from server.store.database import Executor

#: Lines kept per session.
MAX_LINES = 2000


async def save_line(db: Database, session_id: str, line: ChatMessage) -> bool:
    """Store one line unless the session already has it or is full; True when stored."""
    if line.seq >= MAX_LINES:
        return False
    async with db.transaction() as tx:
        have = await tx.fetchone("SELECT 1 AS one FROM session_chat WHERE session_id = ? AND seq = ?",
                                 (session_id, line.seq))
        if have is not None:
            return False
        await tx.execute("INSERT INTO session_chat (session_id, seq, sender, name, text, at) VALUES (?, ?, ?, ?, ?, ?)",
                         (session_id, line.seq, line.sender, line.name, line.text, line.at))
    return True


async def transcript(db: Executor, session_id: str) -> list[Row]:
    """The session's lines in order."""
    rows: list[Row] = await db.fetchall(
        "SELECT seq, sender, name, text, at FROM session_chat WHERE session_id = ? ORDER BY seq", (session_id,))
    return rows
