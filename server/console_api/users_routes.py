"""``/api/v1/users`` and ``/api/v1/groups``: account and rights administration.

Everything here but the group list needs ADMINISTER on every group (``*``), declared once in
:data:`ROUTES`. Each account action (disable, enable, reset-password, reset-totp, unlock) is
its own route, so each is declared, documented and audited on its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from .. import api
from ..accounts import admin, tokens, users
from ..accounts.live import LIVE
from ..auth.rights import Right
from .common import rights_json

RightName = Literal["view_inventory", "remote_view", "remote_control", "run_tasks", "manage_grants",
                    "approve_grants", "administer"]


class NewUserBody(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=users.USERNAME_MAX)]
    role: Literal["admin", "technician", "viewer"]


class RightsBody(msgspec.Struct, forbid_unknown_fields=True):
    rights: Annotated[list[RightName], msgspec.Meta(max_length=16, description="Null or absent: the role's "
                                                                                "default rights.")] | None = None


class GroupBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


def _actor(request: web.Request) -> str:
    return api.principal(request).username


def _user_ref(request: web.Request) -> str:
    return request.match_info["user_id"]


async def list_users(request: web.Request) -> web.StreamResponse:
    """Every account with its rights"""
    db = api.db(request)
    items = []
    for user in await users.list_users(db):
        row = await users.get_row(db, user_id=user.id)
        assert row is not None
        items.append(user.as_json(rights_json(await users.rights_by_group(db, row))))
    return web.json_response({"items": items})


async def create_user(request: web.Request) -> web.StreamResponse:
    """Create an account"""
    body = api.body(request, NewUserBody)
    created = await admin.create_account(api.db(request), body.username, body.role, actor=_actor(request),
                                         with_totp=False)
    return web.json_response({"user": created.user.as_json(), "password": created.password}, status=201)


async def disable_user(request: web.Request) -> web.StreamResponse:
    """Disable an account"""
    db = api.db(request)
    row = await users.require_user(db, _user_ref(request))
    if row["id"] == api.principal(request).user_id:
        raise api.ApiError.invalid("you cannot disable your own account")
    user = await admin.set_disabled(db, row["id"], True, actor=_actor(request))
    await request.app[LIVE].close_user(row["id"], "account disabled")
    return web.json_response({"user": user.as_json()})


async def enable_user(request: web.Request) -> web.StreamResponse:
    """Enable an account"""
    user = await admin.set_disabled(api.db(request), _user_ref(request), False, actor=_actor(request))
    return web.json_response({"user": user.as_json()})


async def reset_password(request: web.Request) -> web.StreamResponse:
    """Reset an account's password"""
    db = api.db(request)
    row = await users.require_user(db, _user_ref(request))
    password = await admin.reset_password(db, row["id"], actor=_actor(request))
    await request.app[LIVE].close_user(row["id"], "password reset")
    return web.json_response({"password": password})


async def reset_totp(request: web.Request) -> web.StreamResponse:
    """Reset an account's TOTP"""
    db = api.db(request)
    row = await users.require_user(db, _user_ref(request))
    await admin.reset_totp(db, row["id"], actor=_actor(request))
    await request.app[LIVE].close_user(row["id"], "TOTP reset")
    return web.json_response({"ok": True})


async def list_user_tokens(request: web.Request) -> web.StreamResponse:
    """A user's API tokens"""
    db = api.db(request)
    row = await users.require_user(db, _user_ref(request))
    return web.json_response({"items": await tokens.list_for(db, row["id"])})


async def revoke_user_token(request: web.Request) -> web.StreamResponse:
    """Revoke a user's API token"""
    db = api.db(request)
    row = await users.require_user(db, _user_ref(request))
    if not await admin.revoke_token(db, request.match_info["token_id"], actor=_actor(request), user_id=row["id"]):
        raise api.ApiError(404, "not_found", "no such active token of this user")
    return web.json_response({"revoked": True})


async def unlock_user(request: web.Request) -> web.StreamResponse:
    """Unlock an account"""
    await admin.unlock(api.db(request), _user_ref(request), actor=_actor(request))
    return web.json_response({"ok": True})


async def put_rights(request: web.Request) -> web.StreamResponse:
    """Set a user's rights on a group"""
    body = api.body(request, RightsBody)
    rights = Right.parse(list(body.rights)) if body.rights is not None else None
    group = request.match_info["group"]
    stored = await admin.assign_rights(api.db(request), _user_ref(request), group, rights, actor=_actor(request))
    return web.json_response({"group": group, "rights": stored.as_names()})


async def delete_rights(request: web.Request) -> web.StreamResponse:
    """Remove a user's rights on a group"""
    removed = await admin.remove_rights(api.db(request), _user_ref(request), request.match_info["group"],
                                        actor=_actor(request))
    return web.json_response({"removed": removed})


async def list_groups(request: web.Request) -> web.StreamResponse:
    """Device groups with device counts"""
    visible = api.principal(request).groups_with(Right.VIEW_INVENTORY)
    if visible is not None and not visible:
        return web.json_response({"items": []})
    where = ""
    params: list[str] = []
    if visible is not None:
        where = f" WHERE g.name IN ({', '.join('?' for _ in visible)})"
        params = sorted(visible)
    rows = await api.db(request).fetchall(
        "SELECT g.name, COUNT(d.id) AS devices FROM device_groups g LEFT JOIN devices d ON d.group_name = g.name"  # noqa: S608
        f"{where} GROUP BY g.name ORDER BY g.name", params)
    return web.json_response({"items": rows})


async def create_group(request: web.Request) -> web.StreamResponse:
    """Create a device group"""
    name = api.body(request, GroupBody).name
    await admin.create_group(api.db(request), name, actor=_actor(request))
    return web.json_response({"name": name}, status=201)


_ADMIN_ALL = "Administrators of every group (`*`) only."
_NO_USER = {404: "No such user"}


def _admin(method: str, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
           response: str, description: str, **more: Any) -> api.Route:
    return api.Route(method, path, handler, Right.ADMINISTER, api.GLOBAL, response=response,
                     description=f"{_ADMIN_ALL} {description}".strip(), **more)


def _action(action: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], response: str,
            description: str, errors: dict[int, str] = _NO_USER) -> api.Route:
    """``POST /api/v1/users/{user_id}/<action>``: no body; the user is named by id or username."""
    return _admin("POST", f"/api/v1/users/{{user_id}}/{action}", handler, response, description, errors=errors)


ROUTES: list[api.Route] = [
    _admin("GET", "/api/v1/users", list_users, "UserList", ""),
    _admin("POST", "/api/v1/users", create_user, "NewAccount",
           "Returns a one-time password; the user enrolls TOTP at the first login. Audited.",
           body=NewUserBody, status=201, errors={400: "Invalid username", 409: "Username taken"}),
    _action("disable", disable_user, "UserChanged",
            "Ends the user's console sessions and closes their websockets at once. Audited.",
            errors={400: "Cannot disable one's own account", 404: "No such user"}),
    _action("enable", enable_user, "UserChanged", "Audited."),
    _action("reset-password", reset_password, "NewPassword",
            "A new one-time password, shown once; revokes the user's API tokens, ends their sessions and closes "
            "their websockets. Audited."),
    _action("reset-totp", reset_totp, "AccountChanged",
            "Forgets the TOTP secret: the user enrolls a new authenticator (QR code) at the next login. Revokes "
            "the user's API tokens, ends their sessions and closes their websockets. Audited."),
    _action("unlock", unlock_user, "AccountChanged", "Clears a lockout after repeated failed logins. Audited."),
    _admin("GET", "/api/v1/users/{user_id}/tokens", list_user_tokens, "ApiTokenList",
           "Never their values.", errors=_NO_USER),
    _admin("POST", "/api/v1/users/{user_id}/tokens/{token_id}/revoke", revoke_user_token, "Revoked",
           "Audited (`token.revoke`).", errors={404: "No such user, or no such active token of theirs"}),
    _admin("PUT", "/api/v1/users/{user_id}/rights/{group}", put_rights, "GroupRights",
           "`rights: null` = the role's defaults; group `*` = every group. Audited.", body=RightsBody,
           errors={404: "No such user or group"}),
    _admin("DELETE", "/api/v1/users/{user_id}/rights/{group}", delete_rights, "RightsRemoved", "Audited.",
           errors=_NO_USER),
    api.Route("GET", "/api/v1/groups", list_groups, api.AUTHENTICATED, response="GroupList",
              description="Groups where the caller holds view_inventory (all of them for admins)."),
    _admin("POST", "/api/v1/groups", create_group, "GroupCreated", "Idempotent. Audited.", body=GroupBody,
           status=201, errors={400: "Invalid name (`*` is reserved)"}),
]
