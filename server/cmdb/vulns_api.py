"""Routes for vulnerabilities: feed import, fleet-wide and per-device CVEs, who is exposed to one.

Reading needs ``view_inventory`` (device routes on the device's group; fleet answers filtered to
the caller's groups). Importing a feed needs ``administer`` on every group and is audited; the
body is parsed in a worker thread so a large feed does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from server import api, audit
from server.api import scopes
from server.auth.rights import Right

from . import vulns

#: Largest feed accepted over the API (the CLI reads bigger files directly).
MAX_FEED_BYTES = 64 * 1024 * 1024


class FeedUpload(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=vulns.FEED_NAME.pattern, description="Re-importing a name replaces it.")]
    format: Literal["osv", "debian", "auto"]
    #: An OSV advisory, a list of them, ``{"vulns": [...]}``, or the Debian Security Tracker's object.
    data: dict[str, Any] | list[Any]
    releases: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=32)] = []


#: Rows per page of "who is exposed" (``total`` counts every device).
MAX_EXPOSED_PAGE = 1000


class ExposedQuery(msgspec.Struct):
    page: Annotated[int, msgspec.Meta(ge=1, le=10**9)] = 1
    per_page: Annotated[int, msgspec.Meta(ge=1, le=MAX_EXPOSED_PAGE)] = MAX_EXPOSED_PAGE


class FleetQuery(msgspec.Struct):
    severity: Literal["critical", "high", "medium", "low", "unimportant", "unknown", ""] = ""


def _groups(request: web.Request) -> set[str] | None:
    return api.principal(request).groups_with(Right.VIEW_INVENTORY)


def _parse(upload: FeedUpload) -> list[vulns.Advisory]:
    fmt = upload.format
    if fmt == "auto":
        doc = upload.data
        fmt = "osv" if isinstance(doc, list) or (isinstance(doc, dict) and ("id" in doc or "vulns" in doc)) \
            else "debian"
    if fmt == "debian":
        return vulns.parse_debian(upload.data, upload.releases)
    return vulns.parse_osv(upload.data)


async def import_feed(request: web.Request) -> web.Response:
    """Import a vulnerability feed"""
    upload = api.body(request, FeedUpload)
    try:
        advisories = await asyncio.to_thread(_parse, upload)
    except vulns.FeedError as exc:
        raise api.ApiError.invalid(str(exc)) from exc
    db = api.db(request)
    result = await vulns.import_feed(db, upload.name, advisories, time.time())
    summary = msgspec.structs.asdict(upload)
    summary.pop("data")
    async with db.transaction() as tx:
        await audit.append_in(tx, api.principal(request).username, "cmdb.vulns.import", upload.name,
                              {**summary, "advisories": result.advisories, "matches": result.matches})
    return api.json(result, status=201)


async def list_feeds(request: web.Request) -> web.Response:
    """Imported vulnerability feeds"""
    return api.json({"items": await vulns.feeds(api.db(request))})


async def fleet(request: web.Request) -> web.Response:
    """Fleet-wide vulnerabilities"""
    q = api.query(request, FleetQuery)
    return api.json({"items": await vulns.fleet_vulns(api.db(request), _groups(request), severity=q.severity)})


async def exposed(request: web.Request) -> web.Response:
    """Devices exposed to a CVE"""
    cve = request.match_info["cve"]
    if len(cve) > 200:
        raise api.ApiError.invalid("id too long")
    q = api.query(request, ExposedQuery)
    items, rows, devices = await vulns.exposed(api.db(request), cve, _groups(request), limit=q.per_page,
                                               offset=(q.page - 1) * q.per_page)
    return api.json({"id": cve, "items": items, "total": devices, "rows": rows, "page": q.page,
                     "per_page": q.per_page})


async def device_vulns(request: web.Request) -> web.Response:
    """A device's vulnerabilities"""
    device_id = request.match_info["device_id"]
    return api.json({"device_id": device_id, "items": await vulns.device_vulns(api.db(request), device_id)})


def routes() -> list[api.Route]:
    view = Right.VIEW_INVENTORY
    return [
        api.Route("POST", "/api/v1/cmdb/vulnerability-feeds", import_feed, Right.ADMINISTER, api.GLOBAL,
                  body=FeedUpload, response=dict[str, Any], status=201, max_body=MAX_FEED_BYTES,
                  description="`data` is an OSV advisory, a list of them, or the Debian Security Tracker JSON "
                              "(`releases` limits it, e.g. [\"bookworm\"]). Replaces the feed of that name and "
                              "re-matches the fleet. Needs administer on every group (`*`); audited."),
        api.Route("GET", "/api/v1/cmdb/vulnerability-feeds", list_feeds, view, response=dict[str, Any]),
        api.Route("GET", "/api/v1/cmdb/vulnerabilities", fleet, view, query=FleetQuery, response=dict[str, Any],
                  description="Advisories that apply to devices the caller may view, with how many, most severe "
                              "first."),
        api.Route("GET", "/api/v1/cmdb/vulnerabilities/{cve}/devices", exposed, view, query=ExposedQuery,
                  response=dict[str, Any],
                  description="Which devices are exposed to this CVE (an advisory id or any alias), with the "
                              "installed and fixed versions: one (device, package) row each, by hostname, "
                              "`per_page` at a time; `total` devices, `rows` in all."),
        api.Route("GET", "/api/v1/devices/{device_id}/vulnerabilities", device_vulns, view, scopes.DEVICE,
                  response=dict[str, Any]),
    ]
