"""The console's authenticators (cookie session, API token) and CSRF check.

Cookie-authenticated requests that change state must carry the session's CSRF token in
``X-CSRF-Token`` (a cross-site page can neither read it nor set custom headers without a
CORS preflight we never grant). Bearer-token requests are not sent by browsers on their
own, so they need no CSRF token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..agent_channel import SERVER_KEY
from ..api.context import CSRF as CSRF_KEY  # re-exported
from ..auth.middleware import is_public
from ..auth.rights import Principal
from ..http_util import json_error
from ..store import Row
from . import sessions, tokens, users

__all__ = ["CSRF_KEY", "SAFE_METHODS", "bearer_authenticator", "cookie_authenticator", "csrf_protect"]
SESSION_ROW_KEY: web.RequestKey[Row] = web.RequestKey("helpline_session_row", dict)
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def cookie_authenticator(request: web.Request) -> Principal | None:
    token = request.cookies.get(sessions.COOKIE_NAME)
    if not token:
        return None
    db = request.app[SERVER_KEY].db
    row = await sessions.lookup(db, token)
    if row is None:
        return None
    request[CSRF_KEY] = row["csrf_token"]
    request[SESSION_ROW_KEY] = row
    return await users.principal_for(db, row, row["session_id"])


async def bearer_authenticator(request: web.Request) -> Principal | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    db = request.app[SERVER_KEY].db
    row = await tokens.lookup(db, token.strip())
    if row is None:
        return None
    return await users.principal_for(db, row, None)


@web.middleware
async def csrf_protect(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
    expected = request.get(CSRF_KEY)
    # Public routes (login) act on no session; login has its own Origin check.
    if request.method not in SAFE_METHODS and isinstance(expected, str) and not is_public(request):
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            return json_error(403, "csrf", f"missing or wrong {CSRF_HEADER} header")
    return await handler(request)
