"""REST API for grants: ``/api/v1/grants`` (create/list), ``…/{grant_id}`` (get), ``…/approve``, ``…/revoke``.

A grant spans device groups (its groups plus the groups of its listed devices), so its routes
declare no scope: the declared right must hold on at least one group, and the handlers check
the grant's own groups. Creating and revoking need MANAGE_GRANTS, approving APPROVE_GRANTS, on
every group the grant touches. A grant is visible to whoever holds MANAGE_GRANTS or
APPROVE_GRANTS on each of its groups; any other caller gets the same 404 as for a grant that
does not exist. Four-eyes approval is on when the server config says so (``grant_four_eyes``).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from aiohttp import web

from protocol import limits
from protocol.grants import Action, Name, Window

from .. import api
from ..api.context import right_names
from ..api.openapi import add_schemas
from ..auth.rights import Principal, Right
from ..config import ServerConfig
from ..errors import ApiError
from ..store import Database, Row
from . import store
from .openapi import SCHEMAS

if TYPE_CHECKING:
    from ..app import HelplineServer

#: Epoch seconds a grant may name (year 5138; keeps floats far from overflow and NaN is refused anyway).
MAX_TIME = 1e11
#: Longest ``duration_s`` (ten years).
MAX_DURATION_S = 10 * 366 * 86400.0
#: Above this many listed devices, their groups are read with one full scan instead of an IN list.
_IN_LIMIT = 500

Names = Annotated[list[Name], msgspec.Meta(max_length=256)]
Epoch = Annotated[float, msgspec.Meta(ge=0, le=MAX_TIME)]


class GrantBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """At least one device or group; at least one technician or role."""

    devices: Names = []
    groups: Names = []
    technicians: Names = []
    roles: Names = []
    actions: Annotated[list[Action], msgspec.Meta(min_length=1, max_length=3)]
    windows: Annotated[list[Window], msgspec.Meta(
        max_length=32, description="Device-local time; empty: any time between not_before and not_after.")] = []
    not_before: Annotated[Epoch, msgspec.Meta(description="Epoch seconds (default: now).")] | None = None
    not_after: Annotated[Epoch, msgspec.Meta(description="Epoch seconds; or give duration_s.")] | None = None
    duration_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_DURATION_S,
                                              description="not_after = not_before + duration_s.")] = 0.0
    reason: Annotated[str, msgspec.Meta(max_length=limits.MAX_SHORT_STR)] = ""


class GrantListQuery(msgspec.Struct):
    status: Annotated[Literal["pending", "active", "revoked"],
                      msgspec.Meta(description="Only this status.")] | None = None


async def _device_groups(db: Database, device_ids: Collection[str]) -> dict[str, str]:
    """Group of each of ``device_ids`` that exists."""
    if not device_ids:
        return {}
    if len(device_ids) > _IN_LIMIT:
        rows = await db.fetchall("SELECT id, group_name FROM devices")
    else:
        marks = ", ".join("?" for _ in device_ids)
        rows = await db.fetchall(f"SELECT id, group_name FROM devices WHERE id IN ({marks})",  # noqa: S608
                                 sorted(device_ids))
    return {r["id"]: r["group_name"] for r in rows if r["id"] in device_ids}


def _sees(caller: Principal, groups: set[str]) -> bool:
    """Managers and approvers of every group a grant touches see it (as the listing does)."""
    return all(caller.can(Right.MANAGE_GRANTS, g) or caller.can(Right.APPROVE_GRANTS, g) for g in groups)


def _require_on_all(caller: Principal, right: Right, groups: set[str]) -> None:
    for group in sorted(groups):
        if not caller.can(right, group):
            raise ApiError(403, "forbidden", f"requires right {right_names(right)} on group {group!r}")


async def _visible_grant(request: web.Request) -> tuple[Principal, Row, set[str]]:
    """The grant named in the path and its groups, or 404 when it is missing or not the caller's to see."""
    caller = api.principal(request)
    db = api.db(request)
    row = await store.get(db, request.match_info["grant_id"])
    if row is None:
        raise ApiError.not_found("grant")
    groups = store.scope_groups(row, await _device_groups(db, store.listed_devices(row)))
    if not _sees(caller, groups):
        raise ApiError.not_found("grant")
    return caller, row, groups


@dataclass(frozen=True)
class GrantHandlers:
    """The grant routes' handlers, given the org grant key and the (live) server config."""

    key_path: Path
    config: ServerConfig

    async def create_grant(self, request: web.Request) -> web.Response:
        """Create a grant"""
        caller = api.principal(request)
        body = api.body(request, GrantBody)
        db = api.db(request)
        device_groups = await _device_groups(db, set(body.devices))
        groups = set(body.groups)
        for device in body.devices:
            group = device_groups.get(device)
            # A device of a group the caller has no right on answers like a missing one.
            if group is None or caller.rights_on(group) is Right.NONE:
                raise ApiError(404, "not_found", f"no device {device}")
            groups.add(group)
        _require_on_all(caller, Right.MANAGE_GRANTS, groups)
        now = time.time()
        not_before = now if body.not_before is None else body.not_before
        not_after = not_before + body.duration_s if body.not_after is None else body.not_after
        grant = store.build(store.GrantRequest(
            devices=list(body.devices), groups=list(body.groups), technicians=list(body.technicians),
            roles=list(body.roles), actions=[str(a) for a in body.actions], windows=msgspec.to_builtins(body.windows),
            not_before=not_before, not_after=not_after, reason=body.reason), caller.username, now=now)
        row = await store.create(db, self.key_path, grant, actor=f"user:{caller.username}",
                                 four_eyes=self.config.grant_four_eyes)
        return web.json_response(store.describe(row), status=201)

    async def list_grants(self, request: web.Request) -> web.Response:
        """List grants"""
        caller = api.principal(request)
        db = api.db(request)
        rows = await store.list_grants(db, api.query(request, GrantListQuery).status)
        device_groups = await _device_groups(db, {d for r in rows for d in store.listed_devices(r)})
        return web.json_response({"grants": [store.describe(r) for r in rows
                                             if _sees(caller, store.scope_groups(r, device_groups))]})

    async def get_grant(self, request: web.Request) -> web.Response:
        """One grant"""
        _caller, row, _groups = await _visible_grant(request)
        return web.json_response(store.describe(row))

    async def approve_grant(self, request: web.Request) -> web.Response:
        """Approve a pending grant"""
        caller, row, groups = await _visible_grant(request)
        _require_on_all(caller, Right.APPROVE_GRANTS, groups)
        fresh = await store.approve(api.db(request), self.key_path, row["grant_id"],
                                    actor=f"user:{caller.username}", approver=caller.username)
        return web.json_response(store.describe(fresh))

    async def revoke_grant(self, request: web.Request) -> web.Response:
        """Revoke a grant"""
        caller, row, groups = await _visible_grant(request)
        _require_on_all(caller, Right.MANAGE_GRANTS, groups)
        fresh = await store.revoke(api.db(request), row["grant_id"], actor=f"user:{caller.username}")
        return web.json_response(store.describe(fresh))


_ON_EVERY_GROUP = " on every device group the grant touches"
_NO_GRANT = "No such grant (or one of a group where the caller neither manages nor approves grants)"
_READ = api.AnyOf(Right.MANAGE_GRANTS, Right.APPROVE_GRANTS)


def routes(key_path: Path, config: ServerConfig) -> list[api.Route]:
    """The grant routes, signing with the grant key at ``key_path``."""
    h = GrantHandlers(key_path, config)
    return [
        api.Route("POST", "/api/v1/grants", h.create_grant, Right.MANAGE_GRANTS, body=GrantBody, response="Grant",
                  status=201, errors={404: "Unknown device"},
                  description=f"Needs manage_grants{_ON_EVERY_GROUP}. Signed with the server's grant key: `pending` "
                              "until a second person approves when four-eyes is on, else `active` at once. Audited."),
        api.Route("GET", "/api/v1/grants", h.list_grants, _READ, query=GrantListQuery, response="GrantList",
                  description="Only grants on whose every group the caller manages or approves grants."),
        api.Route("GET", "/api/v1/grants/{grant_id}", h.get_grant, _READ, response="Grant",
                  errors={404: _NO_GRANT}),
        api.Route("POST", "/api/v1/grants/{grant_id}/approve", h.approve_grant, Right.APPROVE_GRANTS,
                  response="Grant", errors={403: "Lacks approve_grants on one of its groups, or approving one's own "
                                                 "grant (`four_eyes`)", 404: _NO_GRANT, 409: "Not pending"},
                  description=f"Needs approve_grants{_ON_EVERY_GROUP}; not by its issuer (four-eyes). Re-signed "
                              "with the approver. Audited; pushed to connected agents."),
        api.Route("POST", "/api/v1/grants/{grant_id}/revoke", h.revoke_grant, Right.MANAGE_GRANTS, response="Grant",
                  errors={404: _NO_GRANT},
                  description=f"Needs manage_grants{_ON_EVERY_GROUP}. Audited; pushed to connected agents."),
    ]


def setup(server: HelplineServer) -> None:
    api.add_routes(server.console_app, routes(server.pki.grant_key, server.config))
    add_schemas(server.console_app, SCHEMAS)
