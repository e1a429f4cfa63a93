"""The OpenAPI 3.1 document for the whole console API (served at ``/api/v1/openapi.json``).

Each area has its own module with ``paths()`` and ``SCHEMAS`` (CMDB keeps its own in
:mod:`server.cmdb.openapi`); :func:`document` merges them, refusing a path+method or a schema
name defined twice, so areas can grow their part without touching a shared file.
"""

from __future__ import annotations

from collections.abc import Callable

from common.version import __version__
from server.cmdb import openapi as cmdb

from .common import ERROR_SCHEMA, SECURITY_SCHEMES, Json, operation

#: (paths factory, schemas) per area.
AREAS: list[tuple[Callable[[], Json], Json]] = [
    (cmdb.paths, cmdb.SCHEMAS),
]

_DESCRIPTION = """\
Helpline's console API: devices and inventory (CMDB), remote sessions and recordings, grants,
tasks, accounts and audit, agent enrollment.

**Authentication.** Either the console session cookie `__Host-helpline` (from POST /api/v1/auth/login)
or an API token as `Authorization: Bearer hl_…`. With the cookie, every state-changing request
(POST/PUT/DELETE) must also carry the session's `X-CSRF-Token` header. Routes are closed unless marked
public (`security: []`).

**Rights.** Each operation names the right it needs in `x-helpline-right` (checked on the device group
concerned): `a+b` = both, `a|b` = either, `authenticated` = any logged-in caller, `none` = public.
Without it: 403 `{"error": {"code", "message"}}`; without authentication: 401.

**Websockets** are documented as GET operations with `x-helpline-websocket: true`; their description
covers the upgrade, the Origin check and the messages."""


def _meta_paths() -> Json:
    return {"/api/v1/openapi.json": operation(
        "get", "This document", right="none", public=True,
        content={"application/json": {"schema": {"type": "object"}}}, ok_description="OpenAPI 3.1 document")}


def _merge_paths(into: Json, paths: Json) -> None:
    for path, operations in paths.items():
        target = into.setdefault(path, {})
        for method, op in operations.items():
            if method in target:
                raise ValueError(f"{method.upper()} {path} is documented twice")
            target[method] = op


def document() -> Json:
    """The whole document (built on each call: it is small and cheap)."""
    paths: Json = {}
    schemas: Json = {"Error": ERROR_SCHEMA}
    for factory, area_schemas in [*AREAS, (_meta_paths, {})]:
        _merge_paths(paths, factory())
        for name, schema in area_schemas.items():
            if name in schemas:
                raise ValueError(f"schema {name} is defined twice")
            schemas[name] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "Helpline API", "version": __version__, "description": _DESCRIPTION},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }
