"""REST API under /api/v1: devices, inventory, software, changes, health, alerts.

Every route resolves the caller (auth middleware) and checks ``VIEW_INVENTORY`` on the
device's group through :func:`require`; list routes filter in SQL to the groups the caller
may see. Paging, filtering and sorting happen in SQL so the list stays fast at 10,000+
devices. Agent-reported strings are returned as JSON data, never rendered here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server import devices
from server.auth.middleware import PUBLIC_PATHS, require
from server.auth.rights import Right
from server.http_util import json_error
from server.store import Database, Row

from . import alerts, health_store, inventory_store, versions

if TYPE_CHECKING:
    from server.app import HelplineServer

DB_KEY: web.AppKey[Callable[[], Database]] = web.AppKey("helpline_cmdb_db")

MAX_PER_PAGE = 200
MAX_POINTS = 5000
SORTS = {"hostname": "d.hostname", "last_seen": "COALESCE(d.last_seen, 0)", "group": "d.group_name",
         "status": "CASE WHEN d.status = 'revoked' THEN 2 WHEN d.online = 1 THEN 0 ELSE 1 END"}


class BadRequest(Exception):
    """A query parameter is invalid; becomes a 400 with the standard error body."""


def _db(request: web.Request) -> Database:
    return request.app[DB_KEY]()


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an integer") from exc
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def _time(request: web.Request, name: str, default: float | None) -> float | None:
    """Epoch seconds or ISO 8601 (``2026-05-01T09:00:00Z``)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    with contextlib.suppress(ValueError):  # not a number: try ISO 8601 next
        return float(raw)
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise BadRequest(f"{name} must be epoch seconds or an ISO 8601 time") from exc


def _group_filter(groups: set[str] | None, column: str, where: list[str], params: list[Any]) -> bool:
    """Restrict to ``groups`` (None = all); False when the caller can see no group at all."""
    if groups is None:
        return True
    if not groups:
        return False
    where.append(f"{column} IN ({', '.join('?' for _ in groups)})")
    params.extend(sorted(groups))
    return True


def _device_item(row: Row) -> dict[str, Any]:
    return {"id": row["id"], "hostname": row["hostname"], "group": row["group_name"],
            "status": devices.status_of(row), "last_seen": row["last_seen"], "os": row["os"] or "",
            "ip": row["ip"] or "", "serial": row["serial"] or "", "alerts_open": int(row["alerts_open"] or 0)}


_DEVICE_SELECT = ("SELECT d.id, d.hostname, d.group_name, d.status, d.online, d.last_seen, d.agent_version,"
                  " d.enrolled_at, c.os, c.ip, c.serial, c.model, c.last_inventory,"
                  " COALESCE(c.alerts_open, 0) AS alerts_open FROM devices d"
                  " LEFT JOIN cmdb_devices c ON c.device_id = d.id")


async def list_devices(request: web.Request) -> web.Response:
    q = request.query
    group = q.get("group") or None
    principal = require(request, Right.VIEW_INVENTORY, group)
    page = _int(request, "page", 1, 1, 10**9)
    per_page = _int(request, "per_page", 50, 1, MAX_PER_PAGE)
    sort = q.get("sort", "hostname")
    order = q.get("order", "asc")
    if sort not in SORTS:
        raise BadRequest(f"sort must be one of {', '.join(SORTS)}")
    if order not in ("asc", "desc"):
        raise BadRequest("order must be asc or desc")
    where: list[str] = []
    params: list[Any] = []
    empty = {"items": [], "total": 0, "page": page, "per_page": per_page}
    if not _group_filter(principal.groups_with(Right.VIEW_INVENTORY), "d.group_name", where, params):
        return web.json_response(empty)
    if group:
        where.append("d.group_name = ?")
        params.append(group)
    status = q.get("status")
    if status == "online":
        where.append("d.status <> 'revoked' AND d.online = 1")
    elif status == "offline":
        where.append("d.status <> 'revoked' AND d.online = 0")
    elif status == "revoked":
        where.append("d.status = 'revoked'")
    elif status:
        raise BadRequest("status must be online, offline or revoked")
    alert = q.get("alert")
    if alert == "open":
        where.append("c.alerts_open > 0")
    elif alert:
        raise BadRequest("alert must be 'open'")
    if q.get("q"):
        term = f"%{q['q'].lower()}%"
        where.append("(LOWER(d.hostname) LIKE ? OR LOWER(d.id) LIKE ? OR c.ip LIKE ? OR LOWER(c.serial) LIKE ?)")
        params.extend([term, term, term, term])
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    db = _db(request)
    count_sql = f"SELECT COUNT(*) AS n FROM devices d LEFT JOIN cmdb_devices c ON c.device_id = d.id{clause}"  # noqa: S608
    total_row = await db.fetchone(count_sql, params)
    rows = await db.fetchall(f"{_DEVICE_SELECT}{clause} ORDER BY {SORTS[sort]} {order.upper()}, d.id"
                             " LIMIT ? OFFSET ?", [*params, per_page, (page - 1) * per_page])
    return web.json_response({"items": [_device_item(r) for r in rows], "total": int(total_row["n"] or 0)
                              if total_row else 0, "page": page, "per_page": per_page})


async def _device_or_404(request: web.Request) -> Row:
    """The device named in the path, after the rights check on its group."""
    row = await _db(request).fetchone(_DEVICE_SELECT + " WHERE d.id = ?", (request.match_info["device_id"],))
    if row is None:
        require(request, Right.VIEW_INVENTORY, None)
        raise web.HTTPNotFound(text='{"error": {"code": "not_found", "message": "no such device"}}',
                               content_type="application/json")
    require(request, Right.VIEW_INVENTORY, row["group_name"])
    return row


async def get_device(request: web.Request) -> web.Response:
    row = await _device_or_404(request)
    item = _device_item(row)
    item.update({"agent_version": row["agent_version"], "enrolled_at": row["enrolled_at"],
                 "model": row["model"] or "", "last_inventory": row["last_inventory"]})
    open_alerts = await alerts.list_alerts(_db(request), status="open", device_id=row["id"])
    item["alerts"] = [alerts.describe(a) for a in open_alerts]
    return web.json_response(item)


async def get_inventory(request: web.Request) -> web.Response:
    row = await _device_or_404(request)
    sections = await inventory_store.get_inventory(_db(request), row["id"])
    return web.json_response({"device_id": row["id"], "updated_at": row["last_inventory"], "sections": sections})


async def get_device_software(request: web.Request) -> web.Response:
    row = await _device_or_404(request)
    items = await inventory_store.device_software(_db(request), row["id"], request.query.get("q") or None)
    return web.json_response({"device_id": row["id"], "items": items, "total": len(items)})


async def search_software(request: web.Request) -> web.Response:
    principal = require(request, Right.VIEW_INVENTORY, None)
    q = request.query
    name = q.get("name")
    if not name:
        raise BadRequest("name is required")
    where = ["s.name = ?"]
    params: list[Any] = [name]
    if q.get("version"):
        where.append("s.version = ?")
        params.append(q["version"])
    if not _group_filter(principal.groups_with(Right.VIEW_INVENTORY), "d.group_name", where, params):
        return web.json_response({"items": [], "total": 0})
    conditions = " AND ".join(where)
    sql = (f"SELECT s.device_id, d.hostname, d.group_name, s.name, s.version, s.arch, s.source FROM software s"  # noqa: S608
           f" JOIN devices d ON d.id = s.device_id WHERE {conditions} ORDER BY d.hostname, s.device_id")
    rows = await _db(request).fetchall(sql, params)
    below = q.get("version_lt")
    if below:
        rows = [r for r in rows if versions.compare(r["version"], below) < 0]
    items = [{"device_id": r["device_id"], "hostname": r["hostname"], "group": r["group_name"], "name": r["name"],
              "version": r["version"], "arch": r["arch"], "source": r["source"]} for r in rows]
    return web.json_response({"items": items, "total": len(items)})


async def get_changes(request: web.Request) -> web.Response:
    row = await _device_or_404(request)
    since = _time(request, "since", None)
    rows = await inventory_store.changes(_db(request), row["id"], since=since,
                                         section=request.query.get("section") or None)
    items = [{"ts": r["ts"], "section": r["section"], "path": r["path"], "change": r["change"],
              "old": r["old_value"], "new": r["new_value"]} for r in rows]
    return web.json_response({"device_id": row["id"], "items": items})


async def get_health(request: web.Request) -> web.Response:
    row = await _device_or_404(request)
    now = time.time()
    end = _time(request, "to", now)
    assert end is not None
    start = _time(request, "from", end - 86400)
    assert start is not None
    try:
        step = float(request.query.get("step") or 300)
    except ValueError as exc:
        raise BadRequest("step must be a number of seconds") from exc
    if step <= 0 or end <= start:
        raise BadRequest("need step > 0 and from < to")
    if (end - start) / step > MAX_POINTS:
        raise BadRequest(f"at most {MAX_POINTS} points per query: use a larger step")
    points = await health_store.series(_db(request), row["id"], start=start, end=end, step=step, now=now)
    return web.json_response({"device_id": row["id"], "from": start, "to": end, "step": step, "points": points})


async def list_alerts(request: web.Request) -> web.Response:
    device_id = request.query.get("device") or None
    if device_id:
        found = await _db(request).fetchone("SELECT group_name FROM devices WHERE id = ?", (device_id,))
        principal = require(request, Right.VIEW_INVENTORY, found["group_name"] if found else None)
    else:
        principal = require(request, Right.VIEW_INVENTORY, None)
    status = request.query.get("status") or None
    if status not in (None, "open", "resolved"):
        raise BadRequest("status must be open or resolved")
    rows = await alerts.list_alerts(_db(request), status=status, device_id=device_id,
                                    groups=principal.groups_with(Right.VIEW_INVENTORY))
    return web.json_response({"items": [alerts.describe(r) for r in rows]})


async def get_openapi(_request: web.Request) -> web.Response:
    from server import openapi  # the whole API's document; imported late (it imports this package)

    return web.json_response(openapi.document())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guard(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return json_error(400, "bad_request", str(exc))

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


#: (path, handler); every one is documented in the OpenAPI document (a test checks).
ROUTES: list[tuple[str, Handler]] = [
    ("/api/v1/devices", list_devices),
    ("/api/v1/devices/{device_id}", get_device),
    ("/api/v1/devices/{device_id}/inventory", get_inventory),
    ("/api/v1/devices/{device_id}/software", get_device_software),
    ("/api/v1/devices/{device_id}/changes", get_changes),
    ("/api/v1/devices/{device_id}/health", get_health),
    ("/api/v1/software", search_software),
    ("/api/v1/alerts", list_alerts),
    ("/api/v1/openapi.json", get_openapi),
]


def register(server: HelplineServer) -> None:
    """Add the CMDB routes to the console app; only the OpenAPI document is public."""
    app = server.console_app
    app[DB_KEY] = lambda: server.db
    for path, handler in ROUTES:
        app.router.add_get(path, _guard(handler), allow_head=False)
    app[PUBLIC_PATHS].add("/api/v1/openapi.json")
