"""``GET /api/v1/audit`` (filtered, paged newest first) and ``GET /api/v1/audit/verify``.

Both need ADMINISTER on every group (``*``): the log names every group's devices and users.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
from aiohttp import web

from .. import api, audit
from ..auth.rights import Right

MAX_LIMIT = 500

Text = Annotated[str, msgspec.Meta(max_length=256)]


class AuditQuery(msgspec.Struct):
    actor: Annotated[Text, msgspec.Meta(description="Exact actor.")] = ""
    action: Annotated[Text, msgspec.Meta(description="Action, `*` as wildcard (case-blind).")] = ""
    target: Annotated[Text, msgspec.Meta(description="Exact target.")] = ""
    since: Annotated[float, msgspec.Meta(description="From (epoch s, inclusive).")] | None = None
    until: Annotated[float, msgspec.Meta(description="Until (epoch s, exclusive).")] | None = None
    before: Annotated[int, msgspec.Meta(ge=0, le=2**62, description="Only records with seq below this (the "
                                                                     "previous page's `next_before`).")] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = 100


async def list_audit(request: web.Request) -> web.StreamResponse:
    """Audit log, newest first"""
    q = api.query(request, AuditQuery)
    where: list[str] = []
    params: list[Any] = []
    for text, column in ((q.actor, "actor"), (q.target, "target")):
        if text:
            where.append(f"{column} = ?")
            params.append(text)
    if q.action:
        where.append("LOWER(action) LIKE ?")  # case-blind on both engines (PostgreSQL's LIKE is not)
        params.append(q.action.replace("%", "").replace("*", "%").lower())
    bounds: tuple[tuple[float | None, str], ...] = ((q.since, "ts >= ?"), (q.until, "ts < ?"), (q.before, "seq < ?"))
    for bound, condition in bounds:
        if bound is not None:
            where.append(condition)
            params.append(bound)
    sql = "SELECT seq, ts, actor, action, target, details FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = await api.db(request).fetchall(sql + " ORDER BY seq DESC LIMIT ?", [*params, q.limit + 1])
    more = len(rows) > q.limit
    rows = rows[:q.limit]
    items = []
    for row in rows:
        try:
            details = json.loads(row["details"])
        except ValueError:
            details = {"raw": row["details"]}
        items.append({**row, "details": details})
    return web.json_response({"items": items, "next_before": rows[-1]["seq"] if more and rows else None})


async def verify(request: web.Request) -> web.StreamResponse:
    """Verify the audit hash chain"""
    report = await audit.verify_with_anchor(api.db(request))
    return web.json_response({"ok": report.ok, "records": report.records, "first_bad_seq": report.first_bad_seq,
                              "problem": report.problem})


ROUTES: list[api.Route] = [
    api.Route("GET", "/api/v1/audit", list_audit, Right.ADMINISTER, api.GLOBAL, query=AuditQuery,
              response="AuditPage", description="Administrators of every group (`*`) only."),
    api.Route("GET", "/api/v1/audit/verify", verify, Right.ADMINISTER, api.GLOBAL, response="AuditVerification",
              description="Walks the hash chain and reports the first broken record, then checks the log reaches "
                          "the head kept in the server's `audit-anchor` file (newest records deleted: `truncated: "
                          "…`). Administrators of every group (`*`) only."),
]
