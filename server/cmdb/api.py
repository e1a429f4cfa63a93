"""REST API under /api/v1: devices, inventory, software, changes, health, alerts.

Every route needs ``VIEW_INVENTORY``, declared in :data:`ROUTES`: on the device's group for
routes naming a device, on at least one group for listings, which filter in SQL to the
groups the caller may see. Paging, filtering and sorting happen in SQL so the list stays fast
at 10,000+ devices. Agent-reported strings are returned as JSON data, never rendered here.
"""

from __future__ import annotations

import contextlib
import math
import time
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from server import api, devices
from server.api import openapi as api_openapi
from server.api import scopes
from server.api.route import Handler
from server.auth.rights import Right
from server.errors import ApiError
from server.store import Row

from . import alerts, health_store, inventory_store, screen_backend, software_search
from .openapi import SCHEMAS

MAX_PER_PAGE = 200
MAX_POINTS = 5000
#: Fleet software hits per page (``total`` counts them all).
MAX_SOFTWARE_PAGE = 1000
SORTS = {"hostname": "d.hostname", "last_seen": "COALESCE(d.last_seen, 0)", "group": "d.group_name",
         "status": "CASE WHEN d.status = 'revoked' THEN 2 WHEN d.online = 1 THEN 0 ELSE 1 END"}

Text = Annotated[str, msgspec.Meta(max_length=256)]
#: Epoch seconds or ISO 8601 (``2026-05-01T09:00:00Z``).
Instant = Annotated[str, msgspec.Meta(max_length=64, description="Epoch seconds or ISO 8601.",
                                      pattern=r"^(-?[0-9]+(\.[0-9]+)?|[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9:.]+(Z|[+-][0-9]{2}:[0-9]{2})?)?)$")]


class DeviceListQuery(msgspec.Struct):
    q: Annotated[Text, msgspec.Meta(description="Search hostname, id, IP or serial.")] = ""
    group: Annotated[Text, msgspec.Meta(description="Only this device group.")] = ""
    status: Literal["online", "offline", "revoked", None] = None
    alert: Literal["open", None] = None
    sort: Literal["hostname", "last_seen", "status", "group"] = "hostname"
    order: Literal["asc", "desc"] = "asc"
    page: Annotated[int, msgspec.Meta(ge=1, le=10**9)] = 1
    per_page: Annotated[int, msgspec.Meta(ge=1, le=MAX_PER_PAGE)] = 50


class SoftwareQuery(msgspec.Struct):
    q: Annotated[Text, msgspec.Meta(description="Substring of the package name.")] = ""


class ChangesQuery(msgspec.Struct):
    since: Instant | None = None
    section: Annotated[Text, msgspec.Meta(description="Only this inventory section.")] = ""


class HealthQuery(msgspec.Struct, rename={"start": "from", "end": "to"}):
    start: Instant | None = None
    end: Instant | None = None
    step: Annotated[float, msgspec.Meta(gt=0, le=10**7, description="Seconds per point (default 300).")] = 300.0


class SoftwareSearchQuery(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=256, description="Exact package name.")]
    version: Text = ""
    version_lt: Annotated[Text, msgspec.Meta(description="Older than this version (Debian ordering).")] = ""
    page: Annotated[int, msgspec.Meta(ge=1, le=10**9)] = 1
    per_page: Annotated[int, msgspec.Meta(ge=1, le=MAX_SOFTWARE_PAGE)] = MAX_SOFTWARE_PAGE


class AlertQuery(msgspec.Struct):
    status: Literal["open", "resolved", None] = None
    device: Annotated[Text, msgspec.Meta(description="Only this device.")] = ""


def _time(name: str, raw: str | None, default: float) -> float:
    if raw is None or raw == "":
        return default
    value: float | None = None
    with contextlib.suppress(ValueError):  # not a number: try ISO 8601 next
        value = float(raw)
    if value is None:
        try:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
        except ValueError as exc:
            raise ApiError.invalid(f"{name} must be epoch seconds or an ISO 8601 time") from exc
    if not math.isfinite(value):
        raise ApiError.invalid(f"{name} must be a finite number")
    return value


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
    """List devices"""
    q = api.query(request, DeviceListQuery)
    principal = api.principal(request)
    where: list[str] = []
    params: list[Any] = []
    empty = {"items": [], "total": 0, "page": q.page, "per_page": q.per_page}
    if not _group_filter(principal.groups_with(Right.VIEW_INVENTORY), "d.group_name", where, params):
        return web.json_response(empty)
    if q.group:
        where.append("d.group_name = ?")
        params.append(q.group)
    if q.status == "online":
        where.append("d.status <> 'revoked' AND d.online = 1")
    elif q.status == "offline":
        where.append("d.status <> 'revoked' AND d.online = 0")
    elif q.status == "revoked":
        where.append("d.status = 'revoked'")
    if q.alert == "open":
        where.append("c.alerts_open > 0")
    if q.q:
        term = f"%{q.q.lower()}%"
        where.append("(LOWER(d.hostname) LIKE ? OR LOWER(d.id) LIKE ? OR c.ip LIKE ? OR LOWER(c.serial) LIKE ?)")
        params.extend([term, term, term, term])
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    db = api.db(request)
    count_sql = f"SELECT COUNT(*) AS n FROM devices d LEFT JOIN cmdb_devices c ON c.device_id = d.id{clause}"  # noqa: S608
    total_row = await db.fetchone(count_sql, params)
    rows = await db.fetchall(f"{_DEVICE_SELECT}{clause} ORDER BY {SORTS[q.sort]} {q.order.upper()}, d.id"
                             " LIMIT ? OFFSET ?", [*params, q.per_page, (q.page - 1) * q.per_page])
    return web.json_response({"items": [_device_item(r) for r in rows], "total": int(total_row["n"] or 0)
                              if total_row else 0, "page": q.page, "per_page": q.per_page})


async def _device(request: web.Request) -> Row:
    """The device named in the path (its group's right was checked by the route's scope)."""
    row = await api.db(request).fetchone(_DEVICE_SELECT + " WHERE d.id = ?", (request.match_info["device_id"],))
    if row is None:  # deleted between the scope check and now
        raise ApiError.not_found("device")
    return row


async def _screen_backend(request: web.Request, device_id: str) -> dict[str, Any]:
    """The screen backend the device last named (x11, wayland-mutter, wayland-portal): in its hello or a
    ``device.screen_backend`` since, as stored for every node (server/cmdb/screen_backend.py); None: never said.
    With it whether sessions there are view-only (no remote input: the console disables Control)."""
    row = await api.db(request).fetchone("SELECT screen_backend, screen_view_only FROM devices WHERE id = ?",
                                         (device_id,))
    if row is None:
        return {"screen_backend": None, "screen_view_only": False}
    return {"screen_backend": row["screen_backend"] or None, "screen_view_only": screen_backend.view_only(row)}


async def get_device(request: web.Request) -> web.Response:
    """Device detail"""
    row = await _device(request)
    item = _device_item(row)
    item.update({"agent_version": row["agent_version"], "enrolled_at": row["enrolled_at"],
                 "model": row["model"] or "", "last_inventory": row["last_inventory"],
                 **await _screen_backend(request, row["id"])})
    open_alerts = await alerts.list_alerts(api.db(request), status="open", device_id=row["id"])
    item["alerts"] = [alerts.describe(a) for a in open_alerts]
    return web.json_response(item)


async def get_inventory(request: web.Request) -> web.Response:
    """Current inventory"""
    row = await _device(request)
    sections = await inventory_store.get_inventory(api.db(request), row["id"])
    return web.json_response({"device_id": row["id"], "updated_at": row["last_inventory"], "sections": sections})


async def get_device_software(request: web.Request) -> web.Response:
    """Installed software"""
    row = await _device(request)
    q = api.query(request, SoftwareQuery)
    items = await inventory_store.device_software(api.db(request), row["id"], q.q or None)
    return web.json_response({"device_id": row["id"], "items": items, "total": len(items)})


async def search_software(request: web.Request) -> web.Response:
    """Fleet software search"""
    q = api.query(request, SoftwareSearchQuery)
    rows, total = await software_search.search(
        api.db(request), q.name, version=q.version, version_lt=q.version_lt,
        groups=api.principal(request).groups_with(Right.VIEW_INVENTORY), limit=q.per_page,
        offset=(q.page - 1) * q.per_page)
    items = [{"device_id": r["device_id"], "hostname": r["hostname"], "group": r["group_name"], "name": r["name"],
              "version": r["version"], "arch": r["arch"], "source": r["source"]} for r in rows]
    return web.json_response({"items": items, "total": total, "page": q.page, "per_page": q.per_page})


async def get_changes(request: web.Request) -> web.Response:
    """Change history"""
    row = await _device(request)
    q = api.query(request, ChangesQuery)
    since = _time("since", q.since, 0.0) if q.since else None
    rows = await inventory_store.changes(api.db(request), row["id"], since=since, section=q.section or None)
    items = [{"ts": r["ts"], "section": r["section"], "path": r["path"], "change": r["change"],
              "old": r["old_value"], "new": r["new_value"]} for r in rows]
    return web.json_response({"device_id": row["id"], "items": items})


async def get_health(request: web.Request) -> web.Response:
    """Health time series"""
    row = await _device(request)
    q = api.query(request, HealthQuery)
    now = time.time()
    end = _time("to", q.end, now)
    start = _time("from", q.start, end - 86400)
    if end <= start:
        raise ApiError.invalid("need from < to")
    if (end - start) / q.step > MAX_POINTS:
        raise ApiError.invalid(f"at most {MAX_POINTS} points per query: use a larger step")
    points = await health_store.series(api.db(request), row["id"], start=start, end=end, step=q.step, now=now)
    return web.json_response({"device_id": row["id"], "from": start, "to": end, "step": q.step, "points": points})


async def list_alerts(request: web.Request) -> web.Response:
    """Alerts"""
    principal = api.principal(request)
    q = api.query(request, AlertQuery)
    rows = await alerts.list_alerts(api.db(request), status=q.status, device_id=q.device or None,
                                    groups=principal.groups_with(Right.VIEW_INVENTORY))
    return web.json_response({"items": [alerts.describe(r) for r in rows]})


def _get(path: str, handler: Handler, response: str, *, query: type[Any] | None = None,
         device: bool = True, description: str = "") -> api.Route:
    return api.Route("GET", path, handler, Right.VIEW_INVENTORY, scopes.DEVICE if device else None,
                     query=query, response=response, description=description)


#: Every CMDB route; all need VIEW_INVENTORY.
ROUTES: list[api.Route] = [
    _get("/api/v1/devices", list_devices, "DevicePage", query=DeviceListQuery, device=False),
    _get("/api/v1/devices/{device_id}", get_device, "Device"),
    _get("/api/v1/devices/{device_id}/inventory", get_inventory, "Inventory"),
    _get("/api/v1/devices/{device_id}/software", get_device_software, "DeviceSoftware", query=SoftwareQuery),
    _get("/api/v1/devices/{device_id}/changes", get_changes, "Changes", query=ChangesQuery),
    _get("/api/v1/devices/{device_id}/health", get_health, "Health", query=HealthQuery,
         description="Raw samples for steps under 5 minutes within the last 7 days; 5-minute rollups otherwise."),
    _get("/api/v1/software", search_software, "SoftwareHits", query=SoftwareSearchQuery, device=False,
         description="Which devices have a package, e.g. name=openssl&version_lt=3.0.13 (an index range on "
                     "a dpkg-ordered version key); oldest version first, `per_page` at a time, `total` counts all."),
    _get("/api/v1/alerts", list_alerts, "AlertList", query=AlertQuery, device=False),
]


def register(app: web.Application) -> None:
    api.add_routes(app, ROUTES)
    api_openapi.add_schemas(app, SCHEMAS)
