"""The OpenAPI 3.1 document, built from the routes the console app really has.

Paths, parameters, rights (``x-helpline-right``), security and error responses come from each
:class:`~server.api.route.Route`; request, query and response schemas are generated from the
msgspec types the route declares (``msgspec.json.schema_components``). Response bodies that are
not msgspec types yet are named by schema and defined by their area with :func:`add_schemas`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from common.version import __version__

from . import context
from .route import Gate, Route, Scope, access_text

Json = dict[str, Any]

#: Component schemas written by hand, added by each area (name → JSON schema).
SCHEMAS: web.AppKey[dict[str, Json]] = web.AppKey("helpline_openapi_schemas", dict)

REF = "#/components/schemas/{name}"
ERROR_SCHEMA: Json = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}

READ_SECURITY: list[Json] = [{"session": []}, {"token": []}]
WRITE_SECURITY: list[Json] = [{"session": [], "csrf": []}, {"token": []}]
SECURITY_SCHEMES: Json = {
    "session": {"type": "apiKey", "in": "cookie", "name": "__Host-helpline",
                "description": "Console session cookie set by POST /api/v1/auth/login (Secure, HttpOnly, "
                               "SameSite=Strict)."},
    "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token",
             "description": "The session's CSRF token (from login or /api/v1/auth/me); required with the "
                            "cookie on every state-changing request (POST/PUT/DELETE). Not needed with a "
                            "Bearer token."},
    "token": {"type": "http", "scheme": "bearer",
              "description": "API token (`hl_…`) from POST /api/v1/auth/tokens."},
}

DESCRIPTION = """\
Helpline's console API: devices and inventory (CMDB), remote sessions and recordings, the
authority it relays (approver-signed documents), tasks, accounts and audit, agent enrollment.

**Authentication.** Either the console session cookie `__Host-helpline` (from POST /api/v1/auth/login)
or an API token as `Authorization: Bearer hl_…`. With the cookie, every state-changing request
(POST/PUT/DELETE) must also carry the session's `X-CSRF-Token` header. Routes are closed unless marked
public (`security: []`).

**Rights.** Each operation names the right it needs in `x-helpline-right` (checked on the device group
of the object in its path): `a+b` = both, `a|b` = either, `authenticated` = any logged-in caller,
`none` = public. Without it: 403; an object of a group the caller has no right on at all answers 404,
exactly like one that does not exist. Every error is `{"error": {"code", "message"}}`.

**Websockets** are documented as GET operations with `x-helpline-websocket: true`; their description
covers the upgrade, the Origin check and the messages."""


def add_schemas(app: web.Application, schemas: Mapping[str, Json]) -> None:
    """Hand-written component schemas of one area; a name defined twice is an error."""
    table = app.setdefault(SCHEMAS, {})
    for name, schema in schemas.items():
        if name in table:
            raise ValueError(f"schema {name} is defined twice")
        table[name] = schema


def document_for(app: web.Application) -> Json:
    routes = {id(r): r for r in app[context.ROUTES].values()}.values()
    schemas: dict[str, Json] = {}
    if SCHEMAS in app:
        schemas = app[SCHEMAS]
    return document(routes, schemas)


def document(routes: Iterable[Route], schemas: Mapping[str, Json]) -> Json:
    documented = [r for r in routes if not r.extra.get("x-helpline-undocumented")]
    types = _declared_types(documented)
    generated, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(types, generated, strict=True))
    all_schemas: Json = {"Error": ERROR_SCHEMA}
    for name, schema in [*components.items(), *schemas.items()]:
        if name in all_schemas and all_schemas[name] != schema:
            raise ValueError(f"schema {name} is defined twice")
        all_schemas[name] = schema
    paths: Json = {}
    operation_ids: set[str] = set()
    for route in sorted(documented, key=lambda r: (r.path, r.method)):
        method = route.method.lower()
        target = paths.setdefault(route.path, {})
        if method in target:
            raise ValueError(f"{route.method} {route.path} is declared twice")
        target[method] = operation = _operation(route, schema_of, components)
        if operation["operationId"] in operation_ids:  # two areas' handlers share a name: say whose
            operation["operationId"] = f"{method}_{_area(route)}_{route.handler.__name__}"
        if operation["operationId"] in operation_ids:
            raise ValueError(f"operation id {operation['operationId']} is used twice")
        operation_ids.add(operation["operationId"])
    return {
        "openapi": "3.1.0",
        "info": {"title": "Helpline API", "version": __version__, "description": DESCRIPTION},
        "paths": paths,
        "components": {"schemas": all_schemas, "securitySchemes": SECURITY_SCHEMES},
    }


def _area(route: Route) -> str:
    """The server area a handler belongs to (``server.tools.api`` → ``tools``)."""
    parts = route.handler.__module__.split(".")
    return parts[1] if len(parts) > 2 else parts[-1]


def _declared_types(routes: Iterable[Route]) -> list[Any]:
    seen: list[Any] = []
    for route in routes:
        for kind in (route.body, route.query, route.response):
            if kind is not None and not isinstance(kind, str) and kind not in seen:
                seen.append(kind)
    return seen


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _operation(route: Route, schema_of: Mapping[Any, Json], components: Json) -> Json:
    public = route.access is Gate.PUBLIC
    right = access_text(route.access)
    text = "public (no authentication)" if public else f"`{right}`"
    op: Json = {
        "summary": route.summary or route.handler.__doc__ or route.path,
        "description": f"Requires right: {text}." + (f"\n\n{route.description}" if route.description else ""),
        "operationId": f"{route.method.lower()}_{route.handler.__name__}",
        "x-helpline-right": right,
        "security": [] if public else (WRITE_SECURITY if route.writes else READ_SECURITY),
        "parameters": _parameters(route, schema_of, components),
    }
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": _json(schema_of[route.body])}
    success: Json = {"description": route.summary or "OK"}
    if route.content is not None:
        success["content"] = dict(route.content)
    elif isinstance(route.response, str):
        success["content"] = _json({"$ref": REF.format(name=route.response)})
    elif route.response is not None:
        success["content"] = _json(schema_of[route.response])
    responses: Json = {str(101 if route.websocket else route.status): success}
    for status, reason in sorted(_errors(route).items()):
        responses[str(status)] = {"description": reason, "content": _json({"$ref": REF.format(name="Error")})}
    op["responses"] = responses
    if route.websocket:
        op["x-helpline-websocket"] = True
    op.update(route.extra)
    return op


def _errors(route: Route) -> dict[int, str]:
    errors: dict[int, str] = {}
    if route.body is not None or route.query is not None:
        errors[400] = "Invalid input"
    if route.body is not None:
        errors[413] = "Body too large"
    if route.access is not Gate.PUBLIC:
        errors[401] = "Not authenticated"
        errors[403] = f"Lacks {access_text(route.access)}" + (" (or CSRF token missing)" if route.writes else "")
    if route.websocket:
        errors[403] = "Cross-origin websocket refused, or lacks the right"
    if isinstance(route.scope, Scope):
        errors[404] = f"No such {route.scope.noun} (or one of a group the caller has no right on)"
    elif "{" in route.path:  # whatever the path names may not exist (a route may say more precisely)
        errors[404] = "Not found: " + ", ".join(re.findall(r"\{(\w+)\}", route.path))
    errors.update(route.errors)
    return errors


def _parameters(route: Route, schema_of: Mapping[Any, Json], components: Json) -> list[Json]:
    params: list[Json] = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                          for name in route.path_params]
    if route.query is not None:
        ref = schema_of[route.query].get("$ref", "")
        schema = components[ref.rsplit("/", 1)[-1]] if ref else schema_of[route.query]
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            param: Json = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
    return params
