"""``/api/v1/auth``: login (password + TOTP, or TOTP enrollment), logout, me, own sessions and API tokens."""

from __future__ import annotations

import time

from aiohttp import web

from ..accounts import LOGIN_SERVICE, admin, sessions, tokens, users
from ..accounts.authn import CSRF_KEY, SESSION_ROW_KEY
from ..accounts.live import LIVE
from ..agent_channel import SERVER_KEY
from ..auth.middleware import principal_of, require
from ..auth.origin import allowed_origins
from ..auth.rights import Right
from ..http_util import json_error
from .common import BadRequest, handles_errors, json_body, rights_json, string


@handles_errors
async def login(request: web.Request) -> web.StreamResponse:
    """POST {username, password, totp} → session cookie + {user, rights, csrf_token}."""
    origin = request.headers.get("Origin")
    if origin is not None and origin not in allowed_origins(request):
        return json_error(403, "bad_origin", "cross-origin login refused")
    body = await json_body(request)
    username = string(body, "username", max_len=users.USERNAME_MAX)
    password = string(body, "password", max_len=1024)
    code = string(body, "totp", required=False, max_len=16) or None
    outcome = await request.app[LOGIN_SERVICE].login(username, password, code, peer=request.remote or "",
                                                     user_agent=request.headers.get("User-Agent", ""))
    if not outcome.ok:
        payload: dict[str, object] = {"error": {"code": outcome.code, "message": outcome.message}}
        if outcome.enrollment:
            payload["enrollment"] = outcome.enrollment
        headers = {"Retry-After": str(int(outcome.retry_after) + 1)} if outcome.retry_after else None
        return web.json_response(payload, status=outcome.status, headers=headers)
    assert outcome.session is not None and outcome.user is not None
    db = request.app[SERVER_KEY].db
    row = await users.get_row(db, user_id=outcome.user.id)
    assert row is not None
    response = web.json_response({
        "user": outcome.user.as_json(),
        "rights": rights_json(await users.rights_by_group(db, row)),
        "csrf_token": outcome.session.csrf_token,
        "expires_at": time.time() + sessions.IDLE_S,
    })
    response.set_cookie(sessions.COOKIE_NAME, outcome.session.token, path="/", secure=True, httponly=True,
                        samesite="Strict", max_age=sessions.ABSOLUTE_S)
    return response


@handles_errors
async def logout(request: web.Request) -> web.StreamResponse:
    """POST: end this cookie session and close its websockets."""
    principal = principal_of(request)
    if principal.session_id:
        await admin.revoke_session(request.app[SERVER_KEY].db, principal.session_id, actor=principal.username,
                                   reason="logout")
        await request.app[LIVE].close_session(principal.session_id, "logged out")
    response = web.json_response({"ok": True})
    response.del_cookie(sessions.COOKIE_NAME, path="/", secure=True, httponly=True, samesite="Strict")
    return response


async def me(request: web.Request) -> web.StreamResponse:
    """GET: who am I, my rights per group, the CSRF token for this session."""
    principal = principal_of(request)
    db = request.app[SERVER_KEY].db
    row = await users.get_row(db, user_id=principal.user_id)
    if row is None:
        return json_error(401, "unauthenticated", "account gone")
    session_row = request.get(SESSION_ROW_KEY)
    return web.json_response({
        "user": users.User.from_row(row).as_json(),
        "rights": rights_json(principal.rights_by_group),
        "is_admin": principal.is_admin,
        "csrf_token": request.get(CSRF_KEY),
        "session": {"id": principal.session_id,
                    "expires_at": sessions.expires_at(session_row) if session_row else None},
        "all_rights": Right.names(),
    })


async def list_sessions(request: web.Request) -> web.StreamResponse:
    """GET: my live console sessions (``?all=1`` for admins: everyone's)."""
    principal = principal_of(request)
    everyone = request.query.get("all") == "1"
    if everyone:
        require(request, Right.ADMINISTER, "*")
    rows = await sessions.list_for(request.app[SERVER_KEY].db, None if everyone else principal.user_id)
    return web.json_response({"items": [{**r, "current": r["id"] == principal.session_id} for r in rows]})


@handles_errors
async def revoke_session(request: web.Request) -> web.StreamResponse:
    """POST: end one console session (mine, or anyone's for admins); its websockets close at once."""
    principal = principal_of(request)
    session_id = request.match_info["session_id"]
    db = request.app[SERVER_KEY].db
    row = await db.fetchone("SELECT user_id FROM console_sessions WHERE id = ?", (session_id,))
    if row is None or (row["user_id"] != principal.user_id and not principal.is_admin):
        return json_error(404, "not_found", "no such session")
    done = await admin.revoke_session(db, session_id, actor=principal.username)
    await request.app[LIVE].close_session(session_id, "session revoked")
    return web.json_response({"revoked": done})


async def list_tokens(request: web.Request) -> web.StreamResponse:
    """GET: my API tokens (never their values)."""
    principal = principal_of(request)
    return web.json_response({"items": await tokens.list_for(request.app[SERVER_KEY].db, principal.user_id)})


@handles_errors
async def create_token(request: web.Request) -> web.StreamResponse:
    """POST {name, ttl_s}: a new API token for me, shown once."""
    principal = principal_of(request)
    body = await json_body(request)
    name = string(body, "name", max_len=100)
    ttl = body.get("ttl_s")
    if ttl is not None and (not isinstance(ttl, (int, float)) or ttl <= 0):
        raise BadRequest("ttl_s must be a positive number of seconds")
    new = await admin.create_token(request.app[SERVER_KEY].db, principal.user_id, name,
                                   float(ttl) if ttl else None, actor=principal.username)
    return web.json_response({"id": new.id, "token": new.token, "expires_at": new.expires_at}, status=201)


@handles_errors
async def revoke_token(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    done = await admin.revoke_token(request.app[SERVER_KEY].db, request.match_info["token_id"],
                                    actor=principal.username, user_id=None if principal.is_admin
                                    else principal.user_id)
    if not done:
        return json_error(404, "not_found", "no such active token")
    return web.json_response({"revoked": True})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/auth/login", login)
    app.router.add_post("/api/v1/auth/logout", logout)
    app.router.add_get("/api/v1/auth/me", me)
    app.router.add_get("/api/v1/auth/sessions", list_sessions)
    app.router.add_post("/api/v1/auth/sessions/{session_id}/revoke", revoke_session)
    app.router.add_get("/api/v1/auth/tokens", list_tokens)
    app.router.add_post("/api/v1/auth/tokens", create_token)
    app.router.add_post("/api/v1/auth/tokens/{token_id}/revoke", revoke_token)
