"""Resolve the caller of every console/API request; deny by default.

Authenticators (cookie session, API token …) are tried in order; the first that returns a
:class:`Principal` wins. Handlers then call :func:`require` with the right they need on the
device's group. Routes are closed unless listed in :data:`PUBLIC_PREFIXES` or marked public.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..http_util import json_error
from .rights import Principal, Right

Authenticator = Callable[[web.Request], Awaitable[Principal | None]]

from ..api.context import AUTHENTICATORS as AUTHENTICATORS  # noqa: E402
from ..api.context import PRINCIPAL as PRINCIPAL_KEY  # noqa: E402
from ..api.context import ROUTES  # noqa: E402

PUBLIC_PATHS: web.AppKey[set[str]] = web.AppKey("helpline_public_paths", set)
PUBLIC_PREFIXES: web.AppKey[list[str]] = web.AppKey("helpline_public_prefixes", list)


def install(app: web.Application) -> None:
    from ..api.middleware import LEGACY

    app[LEGACY] = True
    app[PUBLIC_PATHS] = set()
    app[PUBLIC_PREFIXES] = ["/api/v1/enroll"]
    app.middlewares.append(authenticate)


def is_public(request: web.Request) -> bool:
    path = request.path
    return path in request.app[PUBLIC_PATHS] or any(path.startswith(p) for p in request.app[PUBLIC_PREFIXES])


@web.middleware
async def authenticate(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
    if request.match_info.route in request.app[ROUTES]:
        return await handler(request)  # declared: the enforcing middleware did it all
    principal: Principal | None = None
    for authenticator in request.app[AUTHENTICATORS]:
        principal = await authenticator(request)
        if principal is not None:
            break
    if principal is not None:
        request[PRINCIPAL_KEY] = principal
    elif not is_public(request) and request.path.startswith("/api/"):
        return json_error(401, "unauthenticated", "log in or present an API token")
    return await handler(request)


def principal_of(request: web.Request) -> Principal:
    principal = request.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise web.HTTPUnauthorized(text=json.dumps({"error": {"code": "unauthenticated", "message": "log in first"}}),
                                   content_type="application/json")
    return principal


def require(request: web.Request, right: Right, group: str | None = None) -> Principal:
    """The caller, if it holds ``right`` on ``group`` (any group when None); else 401/403."""
    principal = principal_of(request)
    if not principal.can(right, group):
        where = f" on group {group!r}" if group else ""
        message = f"requires right {(right.name or str(right)).lower()}{where}"
        raise web.HTTPForbidden(text=json.dumps({"error": {"code": "forbidden", "message": message}}),
                                content_type="application/json")
    return principal
