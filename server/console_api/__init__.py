"""Console REST API for accounts: auth (login/logout/me/tokens), users and groups, audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import api
from ..api.openapi import add_schemas
from . import audit_routes, auth_routes, users_routes
from .openapi import SCHEMAS

if TYPE_CHECKING:
    from ..app import HelplineServer


def setup(server: HelplineServer) -> None:
    app = server.console_app
    api.add_routes(app, [*auth_routes.ROUTES, *users_routes.ROUTES, *audit_routes.ROUTES])
    add_schemas(app, SCHEMAS)
