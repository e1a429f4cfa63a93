"""``/api/v1/auth``: login (password + TOTP or a passkey, or TOTP enrollment), logout, me, own sessions and
API tokens.

Login is public (it checks the Origin itself: a foreign page must not log a browser in); the
rest act on the caller's own account (``AUTHENTICATED``), admins also on everyone's sessions
and tokens.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from aiohttp import web

from .. import api
from ..accounts import LOGIN_SERVICE, admin, password_change, passwords, sessions, tokens, users
from ..accounts.authn import SESSION_ROW_KEY
from ..accounts.live import LIVE
from ..accounts.login import LoginOutcome
from ..api import context
from ..auth.rights import Right
from .common import rights_json

#: The longest API token life a caller may ask for (ten years).
MAX_TOKEN_TTL_S = 10 * 366 * 86400


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=users.USERNAME_MAX)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    totp: Annotated[str, msgspec.Meta(max_length=16, description="The 6-digit code; empty or absent at the "
                                                                 "first step of TOTP enrollment.")] | None = None


class PasskeyLoginBody(msgspec.Struct, forbid_unknown_fields=True):
    ticket: Annotated[str, msgspec.Meta(min_length=1, max_length=128,
                                        description="`passkey.ticket` from the password step's 401 answer.")]
    credential: Annotated[dict[str, Any], msgspec.Meta(description="The browser's assertion as WebAuthn JSON "
                                                                   "(AuthenticationResponseJSON, base64url).")]


class SessionsQuery(msgspec.Struct):
    all: Annotated[bool, msgspec.Meta(description="Everyone's sessions (needs administer on `*`).")] = False


class TokenBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_TOKEN_TTL_S,
                                         description="Lifetime in seconds; absent or null: no expiry.")] | None = None


class PasswordChangeBody(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Annotated[str, msgspec.Meta(min_length=1, max_length=passwords.MAX_LENGTH)]
    new_password: Annotated[str, msgspec.Meta(min_length=1, max_length=passwords.MAX_LENGTH, description=(
        f"At least {passwords.MIN_LENGTH} characters; not the current password, not the username."))]


def _login_origin_allowed(request: web.Request) -> bool:
    """No Origin (scripts, the CLI) or the console's own; a browser on another site is refused."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    allowed = {f"https://{request.host}"}
    if context.ORIGINS in request.app:
        allowed |= request.app[context.ORIGINS](request)
    return origin in allowed


async def login(request: web.Request) -> web.StreamResponse:
    """Log in (password + TOTP)"""
    if not _login_origin_allowed(request):
        raise api.ApiError(403, "bad_origin", "cross-origin login refused")
    body = api.body(request, LoginBody)
    outcome = await request.app[LOGIN_SERVICE].login(body.username, body.password, body.totp or None,
                                                     peer=request.remote or "",
                                                     user_agent=request.headers.get("User-Agent", ""))
    return await _login_response(request, outcome)


async def login_passkey(request: web.Request) -> web.StreamResponse:
    """Log in: the passkey step (instead of the TOTP code)"""
    if not _login_origin_allowed(request):
        raise api.ApiError(403, "bad_origin", "cross-origin login refused")
    body = api.body(request, PasskeyLoginBody)
    outcome = await request.app[LOGIN_SERVICE].login_with_passkey(body.ticket, body.credential,
                                                                  peer=request.remote or "",
                                                                  user_agent=request.headers.get("User-Agent", ""))
    return await _login_response(request, outcome)


async def _login_response(request: web.Request, outcome: LoginOutcome) -> web.StreamResponse:
    """The session cookie and who logged in, or the refusal (with TOTP enrollment or passkey step data)."""
    if not outcome.ok:
        payload: dict[str, object] = {"error": {"code": outcome.code, "message": outcome.message}}
        if outcome.enrollment:
            payload["enrollment"] = outcome.enrollment
        if outcome.passkey:
            payload["passkey"] = outcome.passkey
        headers = {"Retry-After": str(int(outcome.retry_after) + 1)} if outcome.retry_after else None
        return web.json_response(payload, status=outcome.status, headers=headers)
    assert outcome.session is not None and outcome.user is not None
    db = api.db(request)
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


async def logout(request: web.Request) -> web.StreamResponse:
    """Log out"""
    caller = api.principal(request)
    if caller.session_id:
        await admin.revoke_session(api.db(request), caller.session_id, actor=caller.username, reason="logout")
        await request.app[LIVE].close_session(caller.session_id, "logged out")
    response = web.json_response({"ok": True})
    response.del_cookie(sessions.COOKIE_NAME, path="/", secure=True, httponly=True, samesite="Strict")
    return response


async def me(request: web.Request) -> web.StreamResponse:
    """Who am I"""
    caller = api.principal(request)
    row = await users.get_row(api.db(request), user_id=caller.user_id)
    if row is None:
        raise api.ApiError(401, "unauthenticated", "account gone")
    session_row = request.get(SESSION_ROW_KEY)
    return web.json_response({
        "user": users.User.from_row(row).as_json(),
        "rights": rights_json(caller.rights_by_group),
        "is_admin": caller.is_admin,
        "csrf_token": request.get(context.CSRF),
        "session": {"id": caller.session_id,
                    "expires_at": sessions.expires_at(session_row) if session_row else None},
        "all_rights": Right.names(),
    })


async def list_sessions(request: web.Request) -> web.StreamResponse:
    """My live console sessions"""
    caller = api.principal(request)
    everyone = api.query(request, SessionsQuery).all
    if everyone and not caller.is_admin:
        raise api.ApiError(403, "forbidden", "requires right administer on every group")
    rows = await sessions.list_for(api.db(request), None if everyone else caller.user_id)
    return web.json_response({"items": [{**r, "current": r["id"] == caller.session_id} for r in rows]})


async def revoke_session(request: web.Request) -> web.StreamResponse:
    """Revoke a console session"""
    caller = api.principal(request)
    session_id = request.match_info["session_id"]
    db = api.db(request)
    row = await db.fetchone("SELECT user_id FROM console_sessions WHERE id = ?", (session_id,))
    if row is None or (row["user_id"] != caller.user_id and not caller.is_admin):
        raise api.ApiError.not_found("session")
    done = await admin.revoke_session(db, session_id, actor=caller.username)
    await request.app[LIVE].close_session(session_id, "session revoked")
    return web.json_response({"revoked": done})


async def list_tokens(request: web.Request) -> web.StreamResponse:
    """My API tokens"""
    caller = api.principal(request)
    return web.json_response({"items": await tokens.list_for(api.db(request), caller.user_id)})


async def create_token(request: web.Request) -> web.StreamResponse:
    """Create an API token"""
    caller = api.principal(request)
    body = api.body(request, TokenBody)
    new = await admin.create_token(api.db(request), caller.user_id, body.name, body.ttl_s, actor=caller.username)
    return web.json_response({"id": new.id, "token": new.token, "expires_at": new.expires_at}, status=201)


async def revoke_token(request: web.Request) -> web.StreamResponse:
    """Revoke an API token"""
    caller = api.principal(request)
    done = await admin.revoke_token(api.db(request), request.match_info["token_id"], actor=caller.username,
                                    user_id=None if caller.is_admin else caller.user_id)
    if not done:
        raise api.ApiError(404, "not_found", "no such active token")
    return web.json_response({"revoked": True})


async def change_password(request: web.Request) -> web.StreamResponse:
    """Change my password"""
    caller = api.principal(request)
    body = api.body(request, PasswordChangeBody)
    user = await password_change.change_password(api.db(request), caller.user_id, body.current_password,
                                                 body.new_password, session_id=caller.session_id)
    return web.json_response({"user": user.as_json()})


ROUTES: list[api.Route] = [
    api.Route("POST", "/api/v1/auth/login", login, api.PUBLIC, body=LoginBody, response="Login",
              description="Sets the `__Host-helpline` session cookie. A cross-origin `Origin` is refused. At the "
                          "first login the TOTP is enrolled: the 401 answer carries `enrollment` (schema "
                          "LoginError). Repeated failures are rate-limited per address and lock the account.",
              errors={401: "Wrong credentials, or a TOTP code is needed", 403: "Cross-origin login",
                      423: "Account locked after repeated failures", 429: "Too many attempts (see Retry-After)"},
              extra={"x-helpline-login-error": {"$ref": "#/components/schemas/LoginError"}}),
    api.Route("POST", "/api/v1/auth/login/passkey", login_passkey, api.PUBLIC, body=PasskeyLoginBody,
              response="Login",
              description="The second step of a login with a passkey instead of the TOTP code: a password without a "
                          "code is answered 401 `totp_required` with `passkey: {ticket, options}` when the user has "
                          "a passkey; the browser signs `options` (navigator.credentials.get) and sends the ticket "
                          "(single use, two minutes) with the assertion. Same cookie as /auth/login; failures count "
                          "towards the lockout; a signature counter that did not grow is refused and audited.",
              errors={401: "Passkey refused, or the ticket expired", 403: "Cross-origin login",
                      423: "Account locked after repeated failures"}),
    api.Route("POST", "/api/v1/auth/logout", logout, api.AUTHENTICATED, response="LoggedOut",
              description="Ends this cookie session and closes its websockets."),
    api.Route("GET", "/api/v1/auth/me", me, api.AUTHENTICATED, response="Me",
              description="My account, my rights per group, the CSRF token of this cookie session."),
    api.Route("POST", "/api/v1/auth/password", change_password, api.AUTHENTICATED, body=PasswordChangeBody,
              response="UserChanged",
              description="Needs the current password (a wrong one counts towards the lockout). Required after a "
                          "generated password: until then every other route but `GET /auth/me` and logout answers "
                          "403 `password_change_required`. Keeps this session; ends the other console sessions and "
                          "revokes every API token of the user. Audited (`user.change_password`).",
              errors={400: "Weak new password (`weak_password`)", 403: "Wrong current password",
                      423: "Account locked after repeated failures"}),
    api.Route("GET", "/api/v1/auth/sessions", list_sessions, api.AUTHENTICATED, query=SessionsQuery,
              response="ConsoleSessionList", description="`all=true` lists everyone's (administer on `*` only)."),
    api.Route("POST", "/api/v1/auth/sessions/{session_id}/revoke", revoke_session, api.AUTHENTICATED,
              response="Revoked", errors={404: "No such session (or another user's, for non-admins)"},
              description="Mine, or anyone's for admins; its websockets close at once. Audited."),
    api.Route("GET", "/api/v1/auth/tokens", list_tokens, api.AUTHENTICATED, response="ApiTokenList",
              description="Never their values."),
    api.Route("POST", "/api/v1/auth/tokens", create_token, api.AUTHENTICATED, body=TokenBody,
              response="NewApiToken", status=201, description="The value is shown once. Audited."),
    api.Route("POST", "/api/v1/auth/tokens/{token_id}/revoke", revoke_token, api.AUTHENTICATED,
              response="Revoked", errors={404: "No such active token (or another user's, for non-admins)"},
              description="Mine, or anyone's for admins. Audited."),
]
