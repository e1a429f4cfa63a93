"""Session notes: one current text per session, written by its technician (or an admin).

The text is the technician's, not the device's, but it is still shown as text only. Every
change is audited as ``session.notes.update`` with the length and SHA-256 of the new text
(the audit log is long-lived and widely readable; the notes themselves may name people).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from .. import audit
from ..store import Database

#: Longest notes accepted, in characters.
MAX_NOTES_CHARS = 8000

#: Sessions with their notes (columns ``notes_text``, ``notes_author``, ``notes_updated_at``,
#: NULL when none were written); add ``WHERE``/``ORDER BY`` on ``s.``.
SELECT_WITH_NOTES = (
    "SELECT s.*, n.text AS notes_text, n.author AS notes_author, n.updated_at AS notes_updated_at,"
    " n.revision AS notes_revision FROM sessions s LEFT JOIN session_notes n ON n.session_id = s.id"
)

_ALLOWED_CONTROLS = frozenset("\n\r\t")


def invalid_notes(text: Any) -> str | None:
    """Why ``text`` cannot be stored as notes, or None when it can."""
    if not isinstance(text, str):
        return "text must be a string"
    if len(text) > MAX_NOTES_CHARS:
        return f"text must be at most {MAX_NOTES_CHARS} characters (got {len(text)})"
    # PostgreSQL text cannot hold NUL; other control characters are never meant in notes.
    if any((ord(c) < 0x20 and c not in _ALLOWED_CONTROLS) or ord(c) == 0x7F for c in text):
        return "text must not contain control characters other than newline and tab"
    return None


def describe(row: dict[str, Any]) -> dict[str, Any] | None:
    """The notes part of a row from :data:`SELECT_WITH_NOTES` (None when none were written)."""
    if row.get("notes_author") is None:
        return None
    return {"text": row["notes_text"], "author": row["notes_author"], "updated_at": row["notes_updated_at"],
            "revision": row["notes_revision"]}


async def save(db: Database, session: dict[str, Any], author: str, text: str) -> dict[str, Any]:
    """Store ``text`` as the session's notes (replacing any) and audit it; return the stored notes."""
    now = time.time()
    digest = hashlib.sha256(text.encode()).hexdigest()
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO session_notes (session_id, text, author, created_at, updated_at, revision)"
            " VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (session_id) DO UPDATE SET text = excluded.text,"
            " author = excluded.author, updated_at = excluded.updated_at,"
            " revision = session_notes.revision + 1",
            (session["id"], text, author, now, now),
        )
        row = await tx.fetchone("SELECT revision FROM session_notes WHERE session_id = ?", (session["id"],))
        assert row is not None
        await audit.append_in(tx, author, "session.notes.update", session["device_id"],
                              {"session_id": session["id"], "length": len(text), "sha256": digest,
                               "revision": row["revision"]})
    return {"text": text, "author": author, "updated_at": now, "revision": row["revision"]}
