"""Every SQL statement of support requests (issue 18): the requests, their attachments, their event log.

Each change happens in one transaction that also appends the audit record, one
``support_request_events`` row (the KPIs of issue 19 are computed from that log) and a cross-node
``request.changed`` event: every node's :class:`~server.requests.events.RequestEvents` tells the
live queue, the device and other features after the commit.

A request's states and what moves it are the :data:`TRANSITIONS` table; nothing else changes
``state``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from protocol.requests import OPEN_STATES

from .. import audit, events
from ..errors import ApiError
from ..store import Database, Row, Transaction

#: Published (events table) after every committed request event; payload: the event row.
REQUEST_CHANGED = "request.changed"
#: A resolved request added to (or reopened by a technician) within this long goes back to the queue.
REOPEN_WINDOW_S = 7 * 86400

WAITING, CLAIMED, RESOLVED, WITHDRAWN = "waiting", "claimed", "resolved", "withdrawn"
STATES = (WAITING, CLAIMED, RESOLVED, WITHDRAWN)

#: action → (states it may start from, state it ends in). ``escalate`` keeps the request in the queue.
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "claim": (frozenset({WAITING}), CLAIMED),
    "unclaim": (frozenset({CLAIMED}), WAITING),
    "resolve": (frozenset({WAITING, CLAIMED}), RESOLVED),
    "reopen": (frozenset({RESOLVED}), WAITING),
    "withdraw": (frozenset({WAITING, CLAIMED}), WITHDRAWN),
    "escalate": (frozenset({WAITING, CLAIMED}), WAITING),
}

#: Columns of the queue's list (no PNG, no JSON blobs).
LIST_COLUMNS = ("id, number, device_id, local_id, group_name, requester, summary, details, urgency, state, category,"
                " created_at, claimed_at, claimed_by, claimed_by_name, first_session_at, resolved_at, resolved_by,"
                " resolution_notes, reopened_count, escalated, last_note, has_screenshot, updated_at")


def new_request_id() -> str:
    return f"req-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class NewRequest:
    """What a device sent with ``request.open`` (already validated by the protocol)."""

    device_id: str
    local_id: str
    group_name: str
    requester: str
    summary: str
    details: str
    urgency: str
    screenshot: bytes | None
    diagnostics: list[dict[str, Any]]
    attempt: dict[str, Any] | None


# --- reads ----------------------------------------------------------------------------------------


async def get(db: Database | Transaction, request_id: str) -> Row | None:
    if len(request_id) > 64:
        return None
    return await db.fetchone(f"SELECT {LIST_COLUMNS} FROM support_requests WHERE id = ?", (request_id,))  # noqa: S608 (fixed column names)


async def by_local_id(db: Database | Transaction, device_id: str, local_id: str) -> Row | None:
    return await db.fetchone(f"SELECT {LIST_COLUMNS} FROM support_requests WHERE device_id = ? AND local_id = ?",  # noqa: S608 (fixed column names)
                             (device_id, local_id))


async def list_requests(db: Database, *, states: list[str] | None = None, groups: list[str] | None = None,
                        limit: int = 500, offset: int = 0, newest_first: bool = False,
                        resolved_since: float | None = None) -> list[Row]:
    """Requests in ``states`` (all when None) of ``groups`` (all when None), oldest first (the queue's order) or
    newest first (closed requests: the recent ones matter), resolved at or after ``resolved_since`` when given;
    ``limit`` rows from ``offset``."""
    sql, params = f"SELECT {LIST_COLUMNS} FROM support_requests WHERE 1 = 1", list[Any]()  # noqa: S608 (fixed column names)
    if resolved_since is not None:
        sql += " AND resolved_at >= ?"
        params.append(resolved_since)
    if states is not None:
        if not states:
            return []
        sql += f" AND state IN ({', '.join('?' * len(states))})"
        params.extend(states)
    if groups is not None:
        if not groups:
            return []
        sql += f" AND group_name IN ({', '.join('?' * len(groups))})"
        params.extend(groups)
    order = " ORDER BY created_at DESC, id DESC" if newest_first else " ORDER BY created_at, id"
    return await db.fetchall(sql + order + " LIMIT ? OFFSET ?", (*params, limit, offset))


async def open_for_device(db: Database, device_id: str) -> list[Row]:
    return await db.fetchall(
        f"SELECT {LIST_COLUMNS} FROM support_requests WHERE device_id = ? AND state IN (?, ?) ORDER BY created_at",  # noqa: S608 (fixed column names)
        (device_id, *sorted(OPEN_STATES)))


async def open_count(db: Database, device_id: str) -> int:
    row = await db.fetchone("SELECT COUNT(*) AS n FROM support_requests WHERE device_id = ? AND state IN (?, ?)",
                            (device_id, *sorted(OPEN_STATES)))
    return int(row["n"]) if row else 0


async def screenshot(db: Database, request_id: str) -> bytes | None:
    row = await db.fetchone("SELECT screenshot FROM support_request_attachments WHERE request_id = ?", (request_id,))
    if row is None or row["screenshot"] is None:
        return None
    return bytes(row["screenshot"])


async def attachments(db: Database, request_id: str) -> dict[str, Any]:
    """The device's diagnostics and self-service attempt (the screenshot has its own route)."""
    row = await db.fetchone("SELECT diagnostics, attempt FROM support_request_attachments WHERE request_id = ?",
                            (request_id,))
    if row is None:
        return {"diagnostics": [], "attempt": None}
    return {"diagnostics": json.loads(row["diagnostics"]), "attempt": json.loads(row["attempt"])}


async def events_of(db: Database, request_id: str) -> list[Row]:
    rows = await db.fetchall("SELECT id, request_id, at, kind, actor, detail FROM support_request_events"
                             " WHERE request_id = ? ORDER BY id", (request_id,))
    return [{**r, "detail": json.loads(r["detail"])} for r in rows]


async def waiting_unannounced(db: Database, *, older_than: float) -> list[Row]:
    """Waiting requests created before ``older_than`` not yet announced as waiting too long."""
    return await db.fetchall(
        f"SELECT {LIST_COLUMNS} FROM support_requests WHERE state = ? AND created_at < ?"  # noqa: S608 (fixed column names)
        " AND announced_waiting_at IS NULL ORDER BY created_at LIMIT 100", (WAITING, older_than))


# --- writes ---------------------------------------------------------------------------------------


async def event_in(tx: Transaction, request_id: str, kind: str, actor: str, detail: dict[str, Any],
                    at: float) -> None:
    """One row of the request's event log plus the cross-node notification that carries it."""
    body = json.dumps(detail, sort_keys=True, separators=(",", ":"))
    await tx.execute("INSERT INTO support_request_events (request_id, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)",
                     (request_id, at, kind, actor, body))
    await events.publish_in(tx, REQUEST_CHANGED, request_id, {"kind": kind, "actor": actor, "at": at,
                                                              "detail": detail})


async def _lock_creation(tx: Transaction) -> None:
    """Requests are created one at a time (PostgreSQL; SQLite writes one at a time anyway): the numbers, and the
    re-check for a racing resend of the same ``local_id``, happen under this lock."""
    if tx.dialect == "postgresql":
        await tx.execute("SELECT pg_advisory_xact_lock(4318)")


async def _next_number(tx: Transaction) -> int:
    """The next request number; the caller holds :func:`_lock_creation`."""
    row = await tx.fetchone("SELECT COALESCE(MAX(number), 0) AS n FROM support_requests")
    return int(row["n"] if row else 0) + 1


#: Called inside the creating transaction with the new row (the announcer queues its webhooks there,
#: so every request is announced exactly once whichever node created it).
OnCreated = Callable[[Transaction, Row], Awaitable[None]]


async def open_request(db: Database, new: NewRequest, *, on_created: OnCreated | None = None) -> tuple[Row, bool]:
    """Create the request (once per device and ``local_id``); returns (row, whether it was created).

    A self-service attempt that failed or did not help makes the request an escalated one.
    """
    existing = await by_local_id(db, new.device_id, new.local_id)
    if existing is not None:
        return existing, False
    request_id, now = new_request_id(), time.time()
    device_actor = f"device:{new.device_id}"
    escalated = new.attempt is not None and new.attempt.get("outcome") in ("failed", "didnt_help")
    async with db.transaction() as tx:
        await _lock_creation(tx)  # before the re-check: two racing resends cannot both pass it
        existing = await by_local_id(tx, new.device_id, new.local_id)
        if existing is not None:  # a racing resend won
            return existing, False
        number = await _next_number(tx)
        await tx.execute(
            "INSERT INTO support_requests (id, number, device_id, local_id, group_name, requester, summary, details,"
            " urgency, state, category, created_at, claimed_by, claimed_by_name, resolved_by, resolution_notes,"
            " reopened_count, escalated, last_note, has_screenshot, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, '', '', '', '', 0, ?, '', ?, ?)",
            (request_id, number, new.device_id, new.local_id, new.group_name, new.requester, new.summary, new.details,
             new.urgency, WAITING, now, int(escalated), int(new.screenshot is not None), now))
        await tx.execute("INSERT INTO support_request_attachments (request_id, screenshot, diagnostics, attempt)"
                         " VALUES (?, ?, ?, ?)", (request_id, new.screenshot, json.dumps(new.diagnostics),
                                                  json.dumps(new.attempt)))
        summary = {"number": number, "device_id": new.device_id, "group": new.group_name, "urgency": new.urgency,
                   "requester": new.requester, "screenshot": new.screenshot is not None,
                   "diagnostics": len(new.diagnostics)}
        await audit.append_in(tx, device_actor, "request.open", request_id, summary)
        await event_in(tx, request_id, "created", device_actor, summary, now)
        if escalated and new.attempt is not None:
            detail = {"from": "self_service", "fix_id": new.attempt.get("fix_id", ""),
                      "outcome": new.attempt.get("outcome", "")}
            await audit.append_in(tx, device_actor, "request.escalate", request_id, detail)
            await event_in(tx, request_id, "escalated", device_actor, detail, now)
        if on_created is not None:
            created = await get(tx, request_id)
            assert created is not None
            await on_created(tx, created)
    await audit.anchor_head(db)
    row = await get(db, request_id)
    assert row is not None
    return row, True


async def _locked(tx: Transaction, request_id: str) -> Row:
    if tx.dialect == "postgresql":
        await tx.execute("SELECT id FROM support_requests WHERE id = ? FOR UPDATE", (request_id,))
    row = await get(tx, request_id)
    if row is None:
        raise ApiError.not_found("request")
    return row


def _reopened(row: Row) -> dict[str, Any]:
    """The columns a reopen resets (by a technician or by the user adding to a resolved request)."""
    return {"reopened_count": int(row["reopened_count"]) + 1, "claimed_by": "", "claimed_by_name": "",
            "resolved_at": None, "resolved_by": "", "category": "", "announced_waiting_at": None}


def _check(row: Row, action: str) -> str:
    sources, target = TRANSITIONS[action]
    if row["state"] not in sources:
        raise ApiError.conflict("wrong_state", f"{action}: not possible for a {row['state']} request")
    return target


async def transition(db: Database, request_id: str, action: str, *, actor: str, actor_name: str = "",
                     category: str = "", notes: str = "", group: str = "", now: float | None = None) -> Row:
    """Apply one of :data:`TRANSITIONS` (audited, logged as an event); the updated row.

    ``reopen`` is refused more than :data:`REOPEN_WINDOW_S` after the request was resolved.
    """
    now = time.time() if now is None else now
    async with db.transaction() as tx:
        row = await _locked(tx, request_id)
        target = _check(row, action)
        detail: dict[str, Any] = {"from": row["state"], "to": target}
        sets: dict[str, Any] = {"state": target, "updated_at": now}
        kind = {"claim": "claimed", "unclaim": "unclaimed", "resolve": "resolved", "reopen": "reopened",
                "withdraw": "withdrawn", "escalate": "escalated"}[action]
        if action == "claim":
            sets.update(claimed_at=now, claimed_by=actor, claimed_by_name=actor_name or actor)
        elif action == "unclaim":
            sets.update(claimed_by="", claimed_by_name="")
        elif action == "resolve":
            sets.update(resolved_at=now, resolved_by=actor, category=category, resolution_notes=notes)
            detail.update(category=category, notes=notes)
        elif action == "reopen":
            if row["resolved_at"] is None or now - float(row["resolved_at"]) > REOPEN_WINDOW_S:
                raise ApiError.conflict("too_late", "a request can be reopened only within 7 days of its resolution")
            sets.update(_reopened(row))
            detail.update(reopened_count=sets["reopened_count"])
        elif action == "escalate":
            sets.update(escalated=1, claimed_by="", claimed_by_name="")
            if group:
                sets.update(group_name=group)
            detail.update(group=group or row["group_name"], previous_group=row["group_name"], notes=notes)
        columns = ", ".join(f"{name} = ?" for name in sets)
        await tx.execute(f"UPDATE support_requests SET {columns} WHERE id = ?", (*sets.values(), request_id))  # noqa: S608 (fixed column names)
        await audit.append_in(tx, actor, f"request.{action}", request_id, {"number": row["number"], **detail})
        await event_in(tx, request_id, kind, actor, detail, now)
    await audit.anchor_head(db)
    updated = await get(db, request_id)
    assert updated is not None
    return updated


async def note_applied(db: Database | Transaction, request_id: str, message_id: str) -> bool:
    """Whether the device's ``request.add`` with this message id was applied already (a resend)."""
    rows = await db.fetchall("SELECT detail FROM support_request_events WHERE request_id = ? AND kind = 'note'"
                             " AND detail LIKE ?", (request_id, f'%"message_id":"{message_id}"%'))
    return any(json.loads(r["detail"]).get("message_id") == message_id for r in rows)


async def add_note(db: Database, request_id: str, *, actor: str, text: str, from_device: bool,
                   now: float | None = None, message_id: str = "") -> Row:
    """Text added to a request: by the user at the device or by a technician (shown to the user).

    The user adding to a request resolved less than 7 days ago reopens it. A device's note carries its
    message id: the same id again (a resend after a lost acknowledgement) changes nothing.
    """
    now = time.time() if now is None else now
    reopened = False
    async with db.transaction() as tx:
        row = await _locked(tx, request_id)
        if message_id and await note_applied(tx, request_id, message_id):
            return row
        if row["state"] == WITHDRAWN:
            raise ApiError.conflict("wrong_state", "a withdrawn request cannot be added to")
        if row["state"] == RESOLVED and from_device:
            if row["resolved_at"] is None or now - float(row["resolved_at"]) > REOPEN_WINDOW_S:
                raise ApiError.conflict("too_late", "the request was resolved more than 7 days ago")
            reopened = True
        sets: dict[str, Any] = {"updated_at": now}
        if not from_device:
            sets["last_note"] = text
        if reopened:
            sets.update(state=WAITING, **_reopened(row))
        columns = ", ".join(f"{name} = ?" for name in sets)
        await tx.execute(f"UPDATE support_requests SET {columns} WHERE id = ?", (*sets.values(), request_id))  # noqa: S608 (fixed column names)
        detail = {"text": text, "from": "device" if from_device else "technician"}
        if message_id:
            detail["message_id"] = message_id
        await audit.append_in(tx, actor, "request.note", request_id, {"number": row["number"], "from": detail["from"],
                                                                     "length": len(text)})
        await event_in(tx, request_id, "note", actor, detail, now)
        if reopened:
            reopen = {"from": RESOLVED, "to": WAITING, "reopened_count": sets["reopened_count"], "by": "device"}
            await audit.append_in(tx, actor, "request.reopen", request_id, {"number": row["number"], **reopen})
            await event_in(tx, request_id, "reopened", actor, reopen, now)
    await audit.anchor_head(db)
    updated = await get(db, request_id)
    assert updated is not None
    return updated


async def record_session(db: Database, request_id: str, *, session_id: str, actor: str,
                         now: float | None = None) -> None:
    """A session was started from the request: the first one sets ``first_session_at``."""
    now = time.time() if now is None else now
    async with db.transaction() as tx:
        row = await _locked(tx, request_id)
        first = row["first_session_at"] is None
        if first:
            await tx.execute("UPDATE support_requests SET first_session_at = ?, updated_at = ? WHERE id = ?",
                             (now, now, request_id))
        detail = {"session_id": session_id, "first": first}
        await audit.append_in(tx, actor, "request.session", request_id, {"number": row["number"], **detail})
        await event_in(tx, request_id, "session", actor, detail, now)
    await audit.anchor_head(db)


async def claim_waiting_announcement(tx: Transaction, request_id: str, now: float) -> bool:
    """Take the right to announce ``request_id`` as waiting too long (one node wins)."""
    changed = await tx.execute("UPDATE support_requests SET announced_waiting_at = ? WHERE id = ?"
                               " AND announced_waiting_at IS NULL AND state = ?", (now, request_id, WAITING))
    return changed > 0


async def link_session(db: Database, session_id: str, request_id: str) -> None:
    await db.execute("UPDATE sessions SET request_id = ? WHERE id = ?", (request_id, session_id))
