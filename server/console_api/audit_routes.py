"""``GET /api/v1/audit`` (filtered, paged newest first) and ``GET /api/v1/audit/verify``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .. import audit
from ..agent_channel import SERVER_KEY
from ..auth.middleware import require
from ..auth.rights import ANY_GROUP, Right
from ..http_util import json_error

MAX_LIMIT = 500


def _float(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


async def list_audit(request: web.Request) -> web.StreamResponse:
    """Filters: actor, action (``*`` wildcard), target, since/until (epoch s), before (seq), limit."""
    require(request, Right.ADMINISTER, ANY_GROUP)
    q = request.query
    where: list[str] = []
    params: list[Any] = []
    try:
        since, until = _float(q.get("since")), _float(q.get("until"))
        before = int(q["before"]) if q.get("before") else None
        limit = max(1, min(MAX_LIMIT, int(q.get("limit", "100"))))
    except ValueError:
        return json_error(400, "invalid", "since/until/before/limit must be numbers")
    for key, column in (("actor", "actor"), ("target", "target")):
        if q.get(key):
            where.append(f"{column} = ?")
            params.append(q[key])
    if q.get("action"):
        where.append("LOWER(action) LIKE ?")  # case-blind on both engines (PostgreSQL's LIKE is not)
        params.append(q["action"].replace("%", "").replace("*", "%").lower())
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    if until is not None:
        where.append("ts < ?")
        params.append(until)
    if before is not None:
        where.append("seq < ?")
        params.append(before)
    sql = "SELECT seq, ts, actor, action, target, details FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = await request.app[SERVER_KEY].db.fetchall(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for row in rows:
        try:
            details = json.loads(row["details"])
        except ValueError:
            details = {"raw": row["details"]}
        items.append({**row, "details": details})
    return web.json_response({"items": items, "next_before": rows[-1]["seq"] if more and rows else None})


async def verify(request: web.Request) -> web.StreamResponse:
    """Walk the hash chain; report the first broken record."""
    require(request, Right.ADMINISTER, ANY_GROUP)
    report = await audit.verify_chain(request.app[SERVER_KEY].db)
    return web.json_response({"ok": report.ok, "records": report.records, "first_bad_seq": report.first_bad_seq,
                              "problem": report.problem})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/audit", list_audit)
    app.router.add_get("/api/v1/audit/verify", verify)
