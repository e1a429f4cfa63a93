"""REST API for grants: ``/api/v1/grants`` (create/list), ``…/{id}`` (get), ``…/{id}/approve``, ``…/{id}/revoke``.

Creating and revoking need MANAGE_GRANTS, approving needs APPROVE_GRANTS, on every device
group the grant touches. Four-eyes approval is on when the server config says so
(``grant_four_eyes``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..agent_channel import SERVER_KEY
from ..auth.middleware import principal_of, require
from ..auth.rights import Principal, Right
from ..http_util import json_error
from ..store import Row
from . import store

if TYPE_CHECKING:
    from ..app import HelplineServer


def four_eyes(server: HelplineServer) -> bool:
    return bool(getattr(server.config, "grant_four_eyes", False))


async def _device_groups(server: HelplineServer) -> dict[str, str]:
    rows = await server.db.fetchall("SELECT id, group_name FROM devices")
    return {r["id"]: r["group_name"] for r in rows}


def _require_all(request: web.Request, right: Right, groups: set[str]) -> Principal:
    principal = principal_of(request)
    for group in sorted(groups) or [None]:  # type: ignore[list-item]
        principal = require(request, right, group)
    return principal


def _request_from(body: dict[str, Any]) -> store.GrantRequest:
    now = time.time()
    not_before = float(body.get("not_before", now))
    duration = float(body.get("duration_s", 0))
    not_after = float(body["not_after"]) if "not_after" in body else not_before + duration
    return store.GrantRequest(
        devices=list(body.get("devices", [])), groups=list(body.get("groups", [])),
        technicians=list(body.get("technicians", [])), roles=list(body.get("roles", [])),
        actions=list(body.get("actions", [])), windows=list(body.get("windows", [])),
        not_before=not_before, not_after=not_after, reason=str(body.get("reason", "")),
    )


async def create_grant(request: web.Request) -> web.Response:
    server: HelplineServer = request.app[SERVER_KEY]
    principal_of(request)
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("body must be an object")
        grant_request = _request_from(body)
    except (ValueError, TypeError) as exc:
        return json_error(400, "invalid", f"bad grant request: {exc}")
    groups = set(grant_request.groups)
    device_groups = await _device_groups(server)
    for device in grant_request.devices:
        if device not in device_groups:
            return json_error(404, "not_found", f"no device {device}")
        groups.add(device_groups[device])
    principal = _require_all(request, Right.MANAGE_GRANTS, groups)
    try:
        grant = store.build(grant_request, principal.username)
        row = await store.create(server.db, server.pki.grant_key, grant, actor=f"user:{principal.username}",
                                 four_eyes=four_eyes(server))
    except store.GrantError as exc:
        return json_error(exc.status, exc.code, exc.message)
    return web.json_response(store.describe(row), status=201)


async def _row_with_rights(request: web.Request, right: Right) -> tuple[HelplineServer, Principal, Row]:
    server: HelplineServer = request.app[SERVER_KEY]
    row = await store.get(server.db, request.match_info["grant_id"])
    if row is None:
        raise web.HTTPNotFound(text='{"error":{"code":"not_found","message":"no such grant"}}',
                               content_type="application/json")
    principal = _require_all(request, right, store.scope_groups(row, await _device_groups(server)))
    return server, principal, row


async def approve_grant(request: web.Request) -> web.Response:
    server, principal, row = await _row_with_rights(request, Right.APPROVE_GRANTS)
    try:
        fresh = await store.approve(server.db, server.pki.grant_key, row["grant_id"],
                                    actor=f"user:{principal.username}", approver=principal.username)
    except store.GrantError as exc:
        return json_error(exc.status, exc.code, exc.message)
    return web.json_response(store.describe(fresh))


async def revoke_grant(request: web.Request) -> web.Response:
    server, principal, row = await _row_with_rights(request, Right.MANAGE_GRANTS)
    fresh = await store.revoke(server.db, row["grant_id"], actor=f"user:{principal.username}")
    return web.json_response(store.describe(fresh))


async def get_grant(request: web.Request) -> web.Response:
    _server, _principal, row = await _row_with_rights(request, Right.MANAGE_GRANTS)
    return web.json_response(store.describe(row))


async def list_grants(request: web.Request) -> web.Response:
    server: HelplineServer = request.app[SERVER_KEY]
    principal = principal_of(request)
    if not (principal.can(Right.MANAGE_GRANTS) or principal.can(Right.APPROVE_GRANTS)):
        return json_error(403, "forbidden", "requires right manage_grants or approve_grants")
    status = request.query.get("status") or None
    device_groups = await _device_groups(server)
    visible = []
    for row in await store.list_grants(server.db, status):
        groups = store.scope_groups(row, device_groups)
        if all(principal.can(Right.MANAGE_GRANTS, g) or principal.can(Right.APPROVE_GRANTS, g) for g in groups):
            visible.append(store.describe(row))
    return web.json_response({"grants": visible})


def setup(server: HelplineServer) -> None:
    router = server.console_app.router
    router.add_post("/api/v1/grants", create_grant)
    router.add_get("/api/v1/grants", list_grants)
    router.add_get("/api/v1/grants/{grant_id}", get_grant)
    router.add_post("/api/v1/grants/{grant_id}/approve", approve_grant)
    router.add_post("/api/v1/grants/{grant_id}/revoke", revoke_grant)
