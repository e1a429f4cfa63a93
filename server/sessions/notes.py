"""Session notes: one current text per session, written by its technician (or an admin).

The text is the technician's, not the device's, but it is still shown as text only. Every
change is audited as ``session.notes.update`` with the length and SHA-256 of the new text
(the audit log is long-lived and widely readable; the notes themselves may name people).
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated

import msgspec

from server import audit
from server.store import Database, Row

from . import repository
from .views import Json

#: Longest notes accepted, in characters.
MAX_NOTES_CHARS = 8000

#: Notes as the API accepts them. PostgreSQL text cannot hold NUL, and no other control
#: character but newline, carriage return and tab is ever meant in notes.
NotesText = Annotated[str, msgspec.Meta(
    max_length=MAX_NOTES_CHARS, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$",
    description=f"At most {MAX_NOTES_CHARS} characters; no control characters but newline and tab.")]


async def save(db: Database, session: Row, author: str, text: str) -> Json:
    """Store ``text`` as the session's notes (replacing any) and audit it; return the stored notes."""
    now = time.time()
    digest = hashlib.sha256(text.encode()).hexdigest()
    async with db.transaction() as tx:
        revision = await repository.upsert_notes(tx, session["id"], text, author, now)
        await audit.append_in(tx, author, "session.notes.update", session["device_id"],
                              {"session_id": session["id"], "length": len(text), "sha256": digest,
                               "revision": revision})
    return {"text": text, "author": author, "updated_at": now, "revision": revision}
