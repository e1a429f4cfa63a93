"""Read the KPI records from the store: requests of a period and groups, their event logs, the
sessions started from them and their surveys — four queries, no per-request round trips."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from server.store import Database, Row

from .compute import Event, Request, Session, Survey

#: A report reads at most this many requests (a year of a busy desk); more is refused, not truncated
#: (a truncated period would give figures that look right and are not).
MAX_REQUESTS = 200_000


#: Event-log rows and sessions one report reads (ten events, five sessions a request at the cap); more is refused
#: too: a period of few requests with a runaway event log must not load it all into memory.
MAX_EVENTS = 2_000_000
MAX_SESSIONS = 1_000_000


class TooMany(Exception):
    """The period holds more requests than one report reads."""


def period_filter(start: float | None, end: float | None, groups: set[str] | None) -> tuple[str, list[Any]]:
    sql, params = "1 = 1", list[Any]()
    if start is not None:
        sql += " AND r.created_at >= ?"
        params.append(start)
    if end is not None:
        sql += " AND r.created_at < ?"
        params.append(end)
    if groups is not None:
        sql += f" AND r.group_name IN ({', '.join('?' * len(groups))})"
        params.extend(sorted(groups))
    return sql, params


async def load(db: Database, *, start: float | None, end: float | None, groups: set[str] | None) -> list[Request]:
    """Requests created in [start, end) in ``groups`` (None: every group), with everything the KPIs read."""
    if groups is not None and not groups:
        return []
    where, params = period_filter(start, end, groups)
    rows = await _capped(db, "SELECT r.id, r.created_at, r.group_name, r.category, r.claimed_by, r.resolved_by"  # noqa: S608 (only placeholders are formatted in)
                         f" FROM support_requests r WHERE {where} ORDER BY r.created_at", params, MAX_REQUESTS,
                         "requests")
    events: dict[str, list[Event]] = defaultdict(list)
    event_rows = await _capped(db, "SELECT e.request_id, e.at, e.kind, e.actor FROM support_request_events e"  # noqa: S608 (only placeholders are formatted in)
                               f" JOIN support_requests r ON r.id = e.request_id WHERE {where} ORDER BY e.id",
                               params, MAX_EVENTS, "request events")
    for e in event_rows:
        events[e["request_id"]].append(Event(float(e["at"]), str(e["kind"]), str(e["actor"])))
    sessions: dict[str, list[Session]] = defaultdict(list)
    session_rows = await _capped(db, "SELECT s.request_id, s.id, s.started_at, s.ended_at, s.technician_user"  # noqa: S608 (only placeholders are formatted in)
                                 f" FROM sessions s JOIN support_requests r ON r.id = s.request_id WHERE {where}"
                                 " ORDER BY s.created_at", params, MAX_SESSIONS, "sessions")
    for s in session_rows:
        sessions[s["request_id"]].append(Session(
            str(s["id"]), None if s["started_at"] is None else float(s["started_at"]),
            None if s["ended_at"] is None else float(s["ended_at"]), str(s["technician_user"])))
    surveys: dict[str, Survey] = {}
    for v in await db.fetchall(
            "SELECT v.request_id, v.asked_at, v.answered_at, v.score, v.technician FROM surveys v"  # noqa: S608 (only placeholders are formatted in)
            f" JOIN support_requests r ON r.id = v.request_id WHERE {where}", params):
        surveys[v["request_id"]] = Survey(float(v["asked_at"]),
                                          None if v["answered_at"] is None else float(v["answered_at"]),
                                          None if v["score"] is None else int(v["score"]), str(v["technician"]))
    return [Request(id=r["id"], created_at=float(r["created_at"]), group=str(r["group_name"]),
                    category=str(r["category"]), claimed_by=str(r["claimed_by"]), resolved_by=str(r["resolved_by"]),
                    events=tuple(events.get(r["id"], ())), sessions=tuple(sessions.get(r["id"], ())),
                    survey=surveys.get(r["id"])) for r in rows]


async def _capped(db: Database, sql: str, params: list[Any], cap: int, what: str) -> list[Row]:
    """``sql`` (only placeholders formatted in) with a LIMIT one above ``cap``; :class:`TooMany` past it."""
    rows = await db.fetchall(f"{sql} LIMIT ?", (*params, cap + 1))
    if len(rows) > cap:
        raise TooMany(f"more than {cap} {what} in the period; ask for a shorter one")
    return rows
