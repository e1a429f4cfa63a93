"""``/api/v1/users`` and ``/api/v1/groups``: account and rights administration (ADMINISTER on all groups)."""

from __future__ import annotations

from aiohttp import web

from ..accounts import admin, users
from ..accounts.live import LIVE
from ..agent_channel import SERVER_KEY
from ..auth.middleware import principal_of, require
from ..auth.rights import ANY_GROUP, Right
from .common import BadRequest, handles_errors, json_body, rights_json, string


def _admin(request: web.Request) -> str:
    return require(request, Right.ADMINISTER, ANY_GROUP).username


async def list_users(request: web.Request) -> web.StreamResponse:
    """GET: every account with its rights per group."""
    _admin(request)
    db = request.app[SERVER_KEY].db
    items = []
    for user in await users.list_users(db):
        row = await users.get_row(db, user_id=user.id)
        assert row is not None
        items.append(user.as_json(rights_json(await users.rights_by_group(db, row))))
    return web.json_response({"items": items})


@handles_errors
async def create_user(request: web.Request) -> web.StreamResponse:
    """POST {username, role}: the one-time password; TOTP is enrolled by the user at first login."""
    actor = _admin(request)
    body = await json_body(request)
    created = await admin.create_account(request.app[SERVER_KEY].db, string(body, "username", max_len=64),
                                         string(body, "role", max_len=20), actor=actor, with_totp=False)
    return web.json_response({"user": created.user.as_json(), "password": created.password}, status=201)


@handles_errors
async def user_action(request: web.Request) -> web.StreamResponse:
    """POST /api/v1/users/{id}/{disable|enable|reset-password|reset-totp|unlock}."""
    actor = _admin(request)
    db = request.app[SERVER_KEY].db
    ref, action = request.match_info["user_id"], request.match_info["action"]
    row = await users.require_user(db, ref)
    if action in ("disable", "enable"):
        if action == "disable" and row["id"] == principal_of(request).user_id:
            raise BadRequest("you cannot disable your own account")
        user = await admin.set_disabled(db, ref, action == "disable", actor=actor)
        if action == "disable":
            await request.app[LIVE].close_user(row["id"], "account disabled")
        return web.json_response({"user": user.as_json()})
    if action == "reset-password":
        password = await admin.reset_password(db, ref, actor=actor)
        await request.app[LIVE].close_user(row["id"], "password reset")
        return web.json_response({"password": password})
    if action == "reset-totp":
        await admin.reset_totp(db, ref, actor=actor)
        return web.json_response({"ok": True})
    if action == "unlock":
        await admin.unlock(db, ref, actor=actor)
        return web.json_response({"ok": True})
    raise web.HTTPNotFound()


@handles_errors
async def put_rights(request: web.Request) -> web.StreamResponse:
    """PUT {rights: [names] | null}: rights of a user on a group (null = the role's defaults)."""
    actor = _admin(request)
    body = await json_body(request)
    names = body.get("rights")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise BadRequest("rights must be a list of right names or null")
    try:
        rights = Right.parse(names) if names is not None else None
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    stored = await admin.assign_rights(request.app[SERVER_KEY].db, request.match_info["user_id"],
                                       request.match_info["group"], rights, actor=actor)
    return web.json_response({"group": request.match_info["group"], "rights": stored.as_names()})


@handles_errors
async def delete_rights(request: web.Request) -> web.StreamResponse:
    actor = _admin(request)
    removed = await admin.remove_rights(request.app[SERVER_KEY].db, request.match_info["user_id"],
                                        request.match_info["group"], actor=actor)
    return web.json_response({"removed": removed})


async def list_groups(request: web.Request) -> web.StreamResponse:
    """GET: device groups the caller can see (all for admins), with device counts."""
    principal = principal_of(request)
    db = request.app[SERVER_KEY].db
    rows = await db.fetchall(
        "SELECT g.name, COUNT(d.id) AS devices FROM device_groups g LEFT JOIN devices d ON d.group_name = g.name"
        " GROUP BY g.name ORDER BY g.name")
    visible = principal.groups_with(Right.VIEW_INVENTORY)
    items = [r for r in rows if visible is None or r["name"] in visible or principal.is_admin]
    return web.json_response({"items": items})


@handles_errors
async def create_group(request: web.Request) -> web.StreamResponse:
    actor = _admin(request)
    body = await json_body(request)
    name = string(body, "name", max_len=64)
    await admin.create_group(request.app[SERVER_KEY].db, name, actor=actor)
    return web.json_response({"name": name}, status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/users", list_users)
    app.router.add_post("/api/v1/users", create_user)
    app.router.add_post("/api/v1/users/{user_id}/{action}", user_action)
    app.router.add_put("/api/v1/users/{user_id}/rights/{group}", put_rights)
    app.router.add_delete("/api/v1/users/{user_id}/rights/{group}", delete_rights)
    app.router.add_get("/api/v1/groups", list_groups)
    app.router.add_post("/api/v1/groups", create_group)
