"""Every SQL statement of remote sessions: the ``sessions`` rows and their ``session_notes``.

No decisions are made here: the driver (:mod:`.driver`) and the finish path (:mod:`.finish`)
decide, these functions store and read what they decided. Reads return plain rows; the API
turns them into JSON in :mod:`.views`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.store import Row
from server.store.database import Executor

from .live import LiveSession

#: Sessions with their notes (``notes_text``, ``notes_author``, ``notes_updated_at``,
#: ``notes_revision``; NULL when none were written).
_SELECT_WITH_NOTES = (
    "SELECT s.*, n.text AS notes_text, n.author AS notes_author, n.updated_at AS notes_updated_at,"
    " n.revision AS notes_revision FROM sessions s LEFT JOIN session_notes n ON n.session_id = s.id"
)


@dataclass(frozen=True)
class Traffic:
    """What the relay moved, stored when the session ends."""

    bytes_to_technician: int
    bytes_to_agent: int
    recording_path: str | None


async def insert(db: Executor, session: LiveSession) -> None:
    """The row of a just-requested session."""
    m = session.machine
    await db.execute(
        "INSERT INTO sessions (id, device_id, group_name, technician_user, technician_name, technician_role,"
        " requested_mode, reason, state, token_hash, token_cert_serial, token_expires_at,"
        " created_at, document_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (session.session_id, session.device_id, session.group, session.technician_user, session.technician_user,
         session.technician_role, m.requested_mode, session.reason, m.state.value,
         session.token.digest, session.token.cert_serial, session.token.expires_at, m.created_at,
         session.document_id),
    )


async def save_state(db: Executor, session: LiveSession, now: float, *, answered: bool = False,
                     started: bool = False, ended: bool = False, traffic: Traffic | None = None) -> None:
    """Store the machine's state and mode, plus the answer, start or end that just happened at ``now``."""
    m = session.machine
    sets = ["state = ?", "mode = ?"]
    params: list[Any] = [m.state.value, m.mode]
    if answered:
        sets += ["answered_at = ?", "answered_by = ?"]
        params += [now, m.answered_by]
    if started:
        sets.append("started_at = ?")
        params.append(now)
    if ended:
        sets += ["ended_at = ?", "end_reason = ?", "ended_by = ?"]
        params += [now, m.end_reason, m.ended_by]
    if traffic is not None:
        sets += ["bytes_to_technician = ?", "bytes_to_agent = ?", "recording_path = ?"]
        params += [traffic.bytes_to_technician, traffic.bytes_to_agent, traffic.recording_path]
    params.append(session.session_id)
    await db.execute(f"UPDATE sessions SET {', '.join(sets)} WHERE id = ?", params)  # noqa: S608 - fixed columns


async def mark_token_used(db: Executor, session_id: str) -> None:
    await db.execute("UPDATE sessions SET token_used = 1 WHERE id = ?", (session_id,))


async def set_refused_inputs(db: Executor, session_id: str, count: int) -> None:
    await db.execute("UPDATE sessions SET refused_inputs = ? WHERE id = ?", (count, session_id))


async def device_of(db: Executor, session_id: str) -> str | None:
    row = await db.fetchone("SELECT device_id FROM sessions WHERE id = ?", (session_id,))
    return None if row is None else str(row["device_id"])


async def get(db: Executor, session_id: str) -> Row | None:
    return await db.fetchone("SELECT * FROM sessions WHERE id = ?", (session_id,))


async def get_with_notes(db: Executor, session_id: str) -> Row | None:
    return await db.fetchone(f"{_SELECT_WITH_NOTES} WHERE s.id = ?", (session_id,))


async def list_for_device(db: Executor, device_id: str, limit: int = 200) -> list[Row]:
    """The device's sessions with their notes, newest first."""
    return await db.fetchall(f"{_SELECT_WITH_NOTES} WHERE s.device_id = ? ORDER BY s.created_at DESC LIMIT ?",
                             (device_id, limit))


async def upsert_notes(db: Executor, session_id: str, text: str, author: str, now: float) -> int:
    """Store ``text`` as the session's notes (replacing any); return the new revision."""
    await db.execute(
        "INSERT INTO session_notes (session_id, text, author, created_at, updated_at, revision)"
        " VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (session_id) DO UPDATE SET text = excluded.text,"
        " author = excluded.author, updated_at = excluded.updated_at,"
        " revision = session_notes.revision + 1",
        (session_id, text, author, now, now),
    )
    row = await db.fetchone("SELECT revision FROM session_notes WHERE session_id = ?", (session_id,))
    assert row is not None, "the row was just written"
    return int(row["revision"])

