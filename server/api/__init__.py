"""The HTTP API's frame: routes declared with their rights, one enforcing middleware, one
error type, typed bodies, and the OpenAPI document built from the same declarations.

Layout: :mod:`.route` (what a route declares), :mod:`.register` (putting routes on an app),
:mod:`.middleware` (errors and enforcement), :mod:`.context` (what handlers read),
:mod:`.openapi` (the document), :mod:`.responses` (JSON responses from msgspec values).
"""

from server.errors import ApiError

from .context import body, db, group, principal, query, require_also
from .register import add_routes, add_static, install
from .responses import json
from .route import AUTHENTICATED, DEVICE_CERT, GLOBAL, PUBLIC, AnyOf, Route, Scope

__all__ = ["AUTHENTICATED", "DEVICE_CERT", "GLOBAL", "PUBLIC", "AnyOf", "ApiError", "Route", "Scope", "add_routes",
           "add_static", "body", "db", "group", "install", "json", "principal", "query", "require_also"]
