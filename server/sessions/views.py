"""Sessions as the API shows them (schemas in :mod:`.openapi`): rows and live state → JSON."""

from __future__ import annotations

from typing import Any

from server.store import Row

from .live import LiveSession

Json = dict[str, Any]

#: The fields of a stored session that the live machine knows better while the session runs.
_LIVE_FIELDS = ("state", "mode", "pending_mode", "challenge", "answered_by")  # the row may lag the machine


def _stream_url(session_id: str) -> str:
    return f"/api/v1/sessions/{session_id}/stream"


def live_view(session: LiveSession) -> Json:
    """A running session (schema ``LiveSession``)."""
    m = session.machine
    return {
        "session_id": session.session_id, "device_id": session.device_id, "group": session.group,
        "technician": session.technician_user, "requested_mode": m.requested_mode, "mode": m.mode,
        "pending_mode": m.pending_mode, "state": m.state.value, "reason": session.reason,
        "answered_by": m.answered_by or None, "end_reason": m.end_reason or None,
        "ended_by": m.ended_by or None, "created_at": m.created_at, "stream_url": _stream_url(session.session_id),
        "document_id": session.document_id, "challenge": challenge_view(session),
        "people": session.people.view(),
    }


def challenge_view(session: LiveSession) -> Json | None:
    """What the technician signs (``helpline approve prove``), while the agent waits for it."""
    c = session.challenge
    if c is None or session.proof_relayed:
        return None
    return {"nonce": c.nonce, "document_id": c.document_id, "action": c.action, "device_id": c.device_id,
            "expires_at": c.expires_at, "for": session.challenge_for or session.technician_user}


def row_view(row: Row) -> Json:
    """A stored (possibly finished) session (schema ``Session`` without ``notes``)."""
    return {
        "session_id": row["id"], "device_id": row["device_id"], "group": row["group_name"],
        "technician": row["technician_user"], "requested_mode": row["requested_mode"], "mode": row["mode"],
        "pending_mode": None, "state": row["state"], "reason": row["reason"],
        "answered_by": row["answered_by"], "end_reason": row["end_reason"], "ended_by": row["ended_by"],
        "created_at": row["created_at"], "started_at": row["started_at"], "ended_at": row["ended_at"],
        "bytes_to_technician": row["bytes_to_technician"], "bytes_to_agent": row["bytes_to_agent"],
        "refused_inputs": row["refused_inputs"], "recording": row["recording_path"] is not None,
        "stream_url": _stream_url(row["id"]), "document_id": row.get("document_id"), "challenge": None,
    }


def notes_view(row: Row) -> Json | None:
    """The notes of a row read with its notes (schema ``Notes``; None when none were written)."""
    if row.get("notes_author") is None:
        return None
    return {"text": row["notes_text"], "author": row["notes_author"], "updated_at": row["notes_updated_at"],
            "revision": row["notes_revision"]}


def current_view(row: Row, live: LiveSession | None) -> Json:
    """A session with its notes, its live state overlaid while it runs (schema ``Session``)."""
    view = row_view(row) | {"notes": notes_view(row)}
    if live is not None:
        current = live_view(live)
        view |= {key: current[key] for key in _LIVE_FIELDS}
    return view


def recording_view(row: Row, *, size: int, meta: Json, record_format: str) -> Json:
    """What the player needs before fetching a recording (schema ``RecordingInfo``)."""
    return {
        "session_id": row["id"], "device_id": row["device_id"], "group": row["group_name"],
        "technician": row["technician_user"], "mode": row["mode"], "answered_by": row["answered_by"],
        "started_at": row["started_at"], "ended_at": row["ended_at"], "end_reason": row["end_reason"],
        "format": record_format, "size": size, "complete": bool(meta), "meta": meta,
        "data_url": f"/api/v1/sessions/{row['id']}/recording/data",
    }
