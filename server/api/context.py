"""What a handler reads from its request once the enforcing middleware has passed it.

The middleware (:mod:`server.api.middleware`) authenticates, checks the route's declared
right, and decodes the body and query into their declared types; handlers only read the
results through these accessors, so no handler parses JSON or checks a right by itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from server.auth.rights import Principal, Right
from server.errors import ApiError
from server.store import Database

from .route import Route

T = TypeVar("T")

Authenticator = Callable[[web.Request], Awaitable[Principal | None]]

#: The database, opened by the server before the apps start.
DB: web.AppKey[Database] = web.AppKey("helpline_db")
#: Every declared route of the app, by aiohttp's route object (filled by add_routes).
ROUTES: web.AppKey[dict[AbstractRoute, Route]] = web.AppKey("helpline_routes", dict)
#: Cookie session, API token …: tried in order, the first principal wins.
AUTHENTICATORS: web.AppKey[list[Authenticator]] = web.AppKey("helpline_authenticators", list)
#: Origins allowed for websocket upgrades besides the request's own host.
ORIGINS: web.AppKey[Callable[[web.Request], set[str]]] = web.AppKey("helpline_origins")

PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("helpline_principal", Principal)
#: The group the route's scope resolved to (absent for unscoped routes).
GROUP: web.RequestKey[str] = web.RequestKey("helpline_group", str)
#: The session's CSRF token, set by the cookie authenticator.
CSRF: web.RequestKey[str] = web.RequestKey("helpline_csrf", str)
BODY: web.RequestKey[Any] = web.RequestKey("helpline_body", object)
QUERY: web.RequestKey[Any] = web.RequestKey("helpline_query", object)


def db(request: web.Request) -> Database:
    return request.app[DB]


def principal(request: web.Request) -> Principal:
    """The authenticated caller (every non-public route has one)."""
    found = request.get(PRINCIPAL)
    if not isinstance(found, Principal):
        raise ApiError(401, "unauthenticated", "log in or present an API token")
    return found


def maybe_principal(request: web.Request) -> Principal | None:
    found = request.get(PRINCIPAL)
    return found if isinstance(found, Principal) else None


def group(request: web.Request) -> str:
    """The group of the object the path names (routes with a :class:`~server.api.route.Scope`)."""
    return request[GROUP]


def body(request: web.Request, kind: type[T]) -> T:
    value = request.get(BODY)
    if not isinstance(value, kind):
        raise TypeError(f"{request.method} {request.path}: route declares no {kind.__name__} body")
    return value


def query(request: web.Request, kind: type[T]) -> T:
    value = request.get(QUERY)
    if not isinstance(value, kind):
        raise TypeError(f"{request.method} {request.path}: route declares no {kind.__name__} query")
    return value


def require_also(request: web.Request, right: Right) -> Principal:
    """A further right on the route's resolved group, needed only for some inputs
    (control mode needs REMOTE_CONTROL besides the declared REMOTE_VIEW)."""
    caller = principal(request)
    scope_group = request.get(GROUP)
    if not caller.can(right, scope_group):
        where = f" on group {scope_group!r}" if scope_group else ""
        raise ApiError(403, "forbidden", f"requires right {right_names(right)}{where}")
    return caller


def right_names(right: Right) -> str:
    return "+".join(r.name.lower() for r in Right if r.name and r is not Right.NONE and r in right)
