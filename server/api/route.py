"""Routes declared with the right they need: the one table the router, the enforcing
middleware and the OpenAPI document are all built from.

A feature lists its routes as :class:`Route` values and hands them to
:func:`server.api.register.add_routes`; nothing else adds routes to a Helpline app. Every
route states its :data:`Access` — a :class:`~server.auth.rights.Right` (all of its flags),
:class:`AnyOf` several rights, or one of :data:`PUBLIC`, :data:`AUTHENTICATED`,
:data:`DEVICE_CERT` — and, for rights, the :class:`Scope` the right is checked on: the group
of the object named in the path (a device, a session, a task…), :data:`GLOBAL` (the ``*``
pseudo-group: administrators of everything) or ``None`` (the right on at least one group;
the handler filters listings to the caller's groups in SQL).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from server.auth.rights import Right
from server.store import Database

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gate(enum.Enum):
    """Access that is not a right on a group."""

    PUBLIC = "none"                #: no authentication (login, enrollment, the OpenAPI document)
    AUTHENTICATED = "authenticated"  #: any logged-in caller (their own account, tokens)
    DEVICE_CERT = "device"         #: agent listener: the mTLS client certificate is the identity


PUBLIC = Gate.PUBLIC
AUTHENTICATED = Gate.AUTHENTICATED
DEVICE_CERT = Gate.DEVICE_CERT


@dataclass(frozen=True)
class AnyOf:
    """Either of several rights (``manage_grants|approve_grants``)."""

    rights: tuple[Right, ...]

    def __init__(self, *rights: Right) -> None:
        object.__setattr__(self, "rights", rights)


Access = Right | AnyOf | Gate


def access_text(access: Access) -> str:
    """The ``x-helpline-right`` spelling: ``a+b`` = both, ``a|b`` = either."""
    if isinstance(access, Gate):
        return access.value
    if isinstance(access, AnyOf):
        return "|".join(access_text(r) for r in access.rights)
    return "+".join(r.name.lower() for r in Right if r.name and r is not Right.NONE and r in access)


def holds(rights: Right, access: Right | AnyOf) -> bool:
    if isinstance(access, AnyOf):
        return any(r in rights for r in access.rights)
    return access in rights


#: Finds the group of the object a path names; None when there is no such object.
GroupLookup = Callable[[Database, str], Awaitable[str | None]]


@dataclass(frozen=True)
class Scope:
    """Where a right is checked: the group of the object named by path parameter ``param``.

    A caller with no right at all on that group gets the same 404 as for an object that does
    not exist, so ids of other groups' devices, sessions and tasks cannot be probed.
    """

    noun: str
    param: str
    lookup: GroupLookup


class _Global:
    """The ``*`` pseudo-group: rights held on every group (administrators)."""

    def __repr__(self) -> str:
        return "GLOBAL"


GLOBAL = _Global()


@dataclass(frozen=True)
class Route:
    """One API route and everything the server and its document need to know about it."""

    method: str
    path: str
    handler: Handler
    access: Access
    scope: Scope | _Global | None = None
    summary: str = ""
    description: str = ""
    #: msgspec Struct the JSON body is decoded into (``None``: the route takes no body).
    body: type[Any] | None = None
    #: msgspec Struct the query string is converted into (``None``: no query parameters).
    query: type[Any] | None = None
    #: Success body: a msgspec type, the name of a schema in the document's components, or None.
    response: type[Any] | str | None = None
    status: int = 200
    #: Non-JSON success content, e.g. ``{"application/octet-stream": {...}}``.
    content: Mapping[str, Any] | None = None
    #: Documented error statuses besides the ones every route has (400/401/403/404).
    errors: Mapping[int, str] = field(default_factory=dict)
    max_body: int = 64 * 1024
    #: A websocket upgrade: the Origin header must be the console's own.
    websocket: bool = False
    #: Extra OpenAPI operation fields.
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            raise ValueError(f"{self.path}: unsupported method {self.method}")
        if isinstance(self.access, Right) and self.access is Right.NONE:
            raise ValueError(f"{self.method} {self.path}: Right.NONE is not an access rule; use PUBLIC")
        if isinstance(self.access, Gate) and self.scope is not None:
            raise ValueError(f"{self.method} {self.path}: a scope only applies to a right")
        if isinstance(self.scope, Scope) and f"{{{self.scope.param}}}" not in self.path:
            raise ValueError(f"{self.method} {self.path}: scope parameter {self.scope.param!r} is not in the path")
        if self.body is not None and self.method == "GET":
            raise ValueError(f"GET {self.path} cannot take a body")

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"\{([^}:]+)", self.path)

    @property
    def writes(self) -> bool:
        return self.method != "GET"
