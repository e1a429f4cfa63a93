"""The CSAT survey, server side: asked once when a request is first resolved, answered once.

A 'resolved' request event creates the request's ``surveys`` row (``INSERT … ON CONFLICT DO
NOTHING``: every node sees the event, a request resolved again after a reopen is not asked
again) and the node holding the device's control channel sends ``survey.ask``, marking it
delivered. A device that is offline gets it when it connects. The answer is accepted once, only
from the device the request came from, and audited as ``survey.answer``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from protocol.surveys import SurveyAnswer, SurveyAsk

from .. import audit
from ..store import Database, Row
from .source import period_filter

__all__ = ["Row"]

log = logging.getLogger(__name__)

#: The hello capability of agents that take ``survey.ask``.
CAPABILITY = "survey"


async def create(db: Database, request_id: str, now: float) -> bool:
    """The survey row of a just-resolved request; False when it was asked before (or is unknown)."""
    row = await db.fetchone("SELECT device_id, group_name, resolved_by FROM support_requests WHERE id = ?",
                            (request_id,))
    if row is None:
        return False
    changed = await db.execute(
        "INSERT INTO surveys (request_id, device_id, group_name, technician, asked_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (request_id) DO NOTHING",
        (request_id, row["device_id"], row["group_name"], row["resolved_by"], now))
    return changed == 1


async def undelivered(db: Database, device_id: str) -> list[Row]:
    """Surveys of this device not yet sent (it was offline), with what ``survey.ask`` shows."""
    return await db.fetchall(
        "SELECT v.request_id, r.number, r.summary, r.claimed_by_name, r.resolved_by, r.requester FROM surveys v"
        " JOIN support_requests r ON r.id = v.request_id"
        " WHERE v.device_id = ? AND v.delivered_at IS NULL AND v.answered_at IS NULL ORDER BY v.asked_at LIMIT 20",
        (device_id,))


async def pending_of(db: Database, request_id: str) -> Row | None:
    rows = await db.fetchall(
        "SELECT v.request_id, v.device_id, r.number, r.summary, r.claimed_by_name, r.resolved_by, r.requester"
        " FROM surveys v"
        " JOIN support_requests r ON r.id = v.request_id"
        " WHERE v.request_id = ? AND v.delivered_at IS NULL AND v.answered_at IS NULL", (request_id,))
    return rows[0] if rows else None


def ask_of(row: Row) -> SurveyAsk:
    return SurveyAsk(request_id=row["request_id"], number=int(row["number"]), summary=str(row["summary"])[:200],
                     technician=str(row["claimed_by_name"] or row["resolved_by"])[:256],
                     requester=str(row["requester"] or "")[:256])


async def mark_delivered(db: Database, request_id: str, now: float) -> bool:
    """Claim the delivery (one node, once): False when another send already did."""
    return await db.execute("UPDATE surveys SET delivered_at = ? WHERE request_id = ? AND delivered_at IS NULL",
                            (now, request_id)) == 1


async def unmark_delivered(db: Database, request_id: str, at: float) -> bool:
    """Undo :func:`mark_delivered` of ``at`` after a failed send (not if it was answered meanwhile)."""
    return await db.execute("UPDATE surveys SET delivered_at = NULL WHERE request_id = ? AND delivered_at = ?"
                            " AND answered_at IS NULL", (request_id, at)) == 1


class AnswerRefused(Exception):
    """``code`` is the control channel error code sent back to the agent."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def record_answer(db: Database, device_id: str, answer: SurveyAnswer, now: float | None = None) -> None:
    """Store the answer and audit it; refused for another device's request or a second answer."""
    now = time.time() if now is None else now
    async with db.transaction() as tx:
        row = await tx.fetchone("SELECT device_id, answered_at FROM surveys WHERE request_id = ?",
                                (answer.request_id,))
        if row is None or row["device_id"] != device_id:
            raise AnswerRefused("survey_unknown", "no survey of this device for that request")
        # Conditional: on PostgreSQL two concurrent answers both read "unanswered"; only one update matches.
        if row["answered_at"] is not None or await tx.execute(
                "UPDATE surveys SET answered_at = ?, score = ?, comment = ? WHERE request_id = ? AND device_id = ?"
                " AND answered_at IS NULL", (now, answer.score, answer.comment, answer.request_id, device_id)) != 1:
            raise AnswerRefused("survey_answered", "this survey was answered already")
        await audit.append_in(tx, f"device:{device_id}", "survey.answer", answer.request_id,
                              {"score": answer.score, "comment_chars": len(answer.comment)})


def survey_view(row: Row) -> dict[str, Any]:
    """Schema of a request's survey as technicians see it (the comment is the person's, shown as text)."""
    return {"asked_at": row["asked_at"], "delivered_at": row["delivered_at"], "answered_at": row["answered_at"],
            "score": row["score"], "comment": row["comment"], "technician": row["technician"]}


async def of_request(db: Database, request_id: str) -> dict[str, Any] | None:
    """The request's survey (None: never asked): asked, delivered, answered, score and comment."""
    row = await db.fetchone("SELECT asked_at, delivered_at, answered_at, score, comment, technician FROM surveys"
                            " WHERE request_id = ?", (request_id,))
    return survey_view(row) if row is not None else None


#: Comments one page lists (the newest answers first).
MAX_COMMENTS = 200


async def comments(db: Database, *, start: float, end: float, groups: set[str] | None,
                   limit: int = MAX_COMMENTS) -> list[Row]:
    """Answered surveys with a comment, of requests created in [start, end) in ``groups`` (None: all)."""
    if groups is not None and not groups:
        return []
    where, params = period_filter(start, end, groups)
    return await db.fetchall(
        "SELECT v.request_id, r.number, r.summary, r.group_name, v.technician, v.score, v.comment, v.answered_at"  # noqa: S608 (only placeholders are formatted in)
        " FROM surveys v JOIN support_requests r ON r.id = v.request_id"
        f" WHERE {where} AND v.answered_at IS NOT NULL AND v.comment <> ''"
        " ORDER BY v.answered_at DESC, v.request_id LIMIT ?", (*params, limit))
