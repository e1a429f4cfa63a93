"""Routes for licence entitlements: the compliance report (JSON and CSV), create, edit, delete.

Reading needs ``view_inventory`` on some group (counts are fleet-wide; the installation list
names only devices of the caller's groups); changing entitlements needs ``administer`` on every
group and is audited.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from aiohttp import web

from server import api, audit
from server.auth.rights import Right

from . import licences

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Version = Annotated[str, msgspec.Meta(max_length=128, pattern=r"^[A-Za-z0-9.+~:_-]*$")]


class LicenceBody(msgspec.Struct, forbid_unknown_fields=True):
    product: Name
    pattern: Annotated[str, msgspec.Meta(min_length=1, max_length=200,
                                         description="Package name glob (* and ?), case-insensitive.")]
    seats: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]
    version_min: Annotated[Version, msgspec.Meta(description="Counts versions from this one (inclusive).")] = ""
    version_below: Annotated[Version, msgspec.Meta(description="Counts versions below this one.")] = ""
    owner: Annotated[str, msgspec.Meta(max_length=200)] = ""
    expires_at: Annotated[float, msgspec.Meta(ge=0, le=1e11, description="Epoch seconds.")] | None = None
    notes: Annotated[str, msgspec.Meta(max_length=2000)] = ""

    def entitlement(self) -> licences.Entitlement:
        return licences.Entitlement(self.product, self.pattern, self.seats, self.version_min, self.version_below,
                                    self.owner, self.expires_at, self.notes)


async def list_licences(request: web.Request) -> web.Response:
    """Licence compliance"""
    return api.json({"items": await licences.report(api.db(request), time.time())})


async def licences_csv(request: web.Request) -> web.Response:
    """Licence compliance as CSV"""
    text = licences.to_csv(await licences.report(api.db(request), time.time()))
    return web.Response(text=text, content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="licences.csv"'})


async def create_licence(request: web.Request) -> web.Response:
    """Add an entitlement"""
    body = api.body(request, LicenceBody)
    actor = api.principal(request).username
    now = time.time()
    async with api.db(request).transaction() as tx:
        licence_id = await licences.create(tx, body.entitlement(), now)
        await audit.append_in(tx, actor, "cmdb.licence.create", licence_id, msgspec.to_builtins(body))
    return api.json((await licences.report(api.db(request), now, licence_id))[0], status=201)


async def update_licence(request: web.Request) -> web.Response:
    """Change an entitlement"""
    body = api.body(request, LicenceBody)
    licence_id = request.match_info["licence_id"]
    actor = api.principal(request).username
    now = time.time()
    async with api.db(request).transaction() as tx:
        if not await licences.update(tx, licence_id, body.entitlement(), now):
            raise api.ApiError.not_found("licence")
        await audit.append_in(tx, actor, "cmdb.licence.update", licence_id, msgspec.to_builtins(body))
    return api.json((await licences.report(api.db(request), now, licence_id))[0])


async def delete_licence(request: web.Request) -> web.Response:
    """Remove an entitlement (its over-use alerts resolve)"""
    licence_id = request.match_info["licence_id"]
    actor = api.principal(request).username
    async with api.db(request).transaction() as tx:
        if not await licences.delete(tx, licence_id, time.time()):
            raise api.ApiError.not_found("licence")
        await audit.append_in(tx, actor, "cmdb.licence.delete", licence_id)
    return api.json({"deleted": licence_id})


async def licence_installations(request: web.Request) -> web.Response:
    """Devices counted against an entitlement"""
    licence_id = request.match_info["licence_id"]
    db = api.db(request)
    if await db.fetchone("SELECT id FROM licences WHERE id = ?", (licence_id,)) is None:
        raise api.ApiError.not_found("licence")
    rows = await licences.installations(db, licence_id, api.principal(request).groups_with(Right.VIEW_INVENTORY))
    return api.json({"items": [{"device_id": r["device_id"], "hostname": r["hostname"], "group": r["group_name"],
                                "package": r["package"], "version": r["version"]} for r in rows]})


_ADMIN_NOTE = "Needs administer on every group (`*`); audited. Installations are re-counted at once."


def routes() -> list[api.Route]:
    view, admin = Right.VIEW_INVENTORY, Right.ADMINISTER
    return [
        api.Route("GET", "/api/v1/cmdb/licences", list_licences, view, response=dict[str, Any],
                  description="Each entitlement with installations counted fleet-wide, unused seats, over-use "
                              "and contract state (`over_use`, `expired`, `expiring` within 30 days, "
                              "`unused_seats`, `ok`)."),
        api.Route("GET", "/api/v1/cmdb/licences.csv", licences_csv, view,
                  content={"text/csv": {"schema": {"type": "string"}}},
                  description="The compliance report as CSV (cells that a spreadsheet would run are quoted)."),
        api.Route("POST", "/api/v1/cmdb/licences", create_licence, admin, api.GLOBAL, body=LicenceBody,
                  response=dict[str, Any], status=201, description=_ADMIN_NOTE),
        api.Route("PUT", "/api/v1/cmdb/licences/{licence_id}", update_licence, admin, api.GLOBAL, body=LicenceBody,
                  response=dict[str, Any], description=_ADMIN_NOTE),
        api.Route("DELETE", "/api/v1/cmdb/licences/{licence_id}", delete_licence, admin, api.GLOBAL,
                  response=dict[str, Any], description=_ADMIN_NOTE),
        api.Route("GET", "/api/v1/cmdb/licences/{licence_id}/installations", licence_installations, view,
                  response=dict[str, Any], description="Only devices of groups the caller may view."),
    ]
