"""Routes for the personal-data settings (issue 17): per-group collection switch, login-history retention.

Reading needs ``view_inventory`` (only the caller's groups are listed). Switching a group needs
``administer`` on that group; the retention is fleet-wide and needs ``administer`` on every group
(``*``). Both are audited and reach connected agents at once (:mod:`.personal_push`).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web

from server import api
from server.api.route import Scope
from server.auth.rights import Right
from server.store import Database

from . import personal_changes, settings


async def _group_itself(db: Database, name: str) -> str | None:
    if len(name) > 200:
        return None
    row = await db.fetchone("SELECT name FROM device_groups WHERE name = ?", (name,))
    return None if row is None else str(row["name"])


#: Rights checked on the device group named in the path.
GROUP = Scope("device group", "group", _group_itself)


class GroupSwitch(msgspec.Struct, forbid_unknown_fields=True):
    collect: Annotated[bool, msgspec.Meta(description="False: the group's agents collect no local accounts and no "
                                                      "login history, and what the server holds is deleted.")]


class Retention(msgspec.Struct, forbid_unknown_fields=True):
    login_retention_days: Annotated[int, msgspec.Meta(ge=1, le=settings.MAX_RETENTION_DAYS)]


async def show(request: web.Request) -> web.Response:
    """Personal-data settings"""
    groups = api.principal(request).groups_with(Right.VIEW_INVENTORY)
    return api.json(await personal_changes.overview(api.db(request), groups))


async def set_group(request: web.Request) -> web.Response:
    """Switch personal-data collection for a group"""
    body = api.body(request, GroupSwitch)
    group = request.match_info["group"]
    db = api.db(request)
    try:
        await personal_changes.set_group(db, group, body.collect, api.principal(request).username)
    except ValueError as exc:
        raise api.ApiError.invalid(str(exc)) from exc
    return api.json({"group": group, "collect": body.collect})


async def set_retention(request: web.Request) -> web.Response:
    """Set the login-history retention"""
    body = api.body(request, Retention)
    db = api.db(request)
    try:
        config = await personal_changes.set_retention(db, body.login_retention_days, api.principal(request).username)
    except ValueError as exc:
        raise api.ApiError.invalid(str(exc)) from exc
    return api.json({"login_retention_days": config["login_retention_days"]})


def routes() -> list[api.Route]:
    return [
        api.Route("GET", "/api/v1/cmdb/personal-data", show, Right.VIEW_INVENTORY, response=dict[str, Any],
                  description="The login-history retention and, per device group the caller may view, whether "
                              "its agents collect local accounts and login history."),
        api.Route("PUT", "/api/v1/cmdb/personal-data/retention", set_retention, Right.ADMINISTER, api.GLOBAL,
                  body=Retention, response=dict[str, Any],
                  description="Days of login history kept (1 … 3650); older entries are deleted now and agents "
                              "send no more. Needs administer on every group (`*`). Audited."),
        api.Route("PUT", "/api/v1/groups/{group}/personal-data", set_group, Right.ADMINISTER, GROUP,
                  body=GroupSwitch, response=dict[str, Any],
                  description="Whether this group's agents collect local accounts and login history. Off: "
                              "connected agents stop at once, the server refuses the sections and deletes what it "
                              "holds. Audited."),
    ]
