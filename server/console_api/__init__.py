"""Console REST API for accounts: auth (login/logout/me/tokens), users and groups, audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..auth.middleware import PUBLIC_PATHS
from . import audit_routes, auth_routes, users_routes

if TYPE_CHECKING:
    from ..app import HelplineServer


def setup(server: HelplineServer) -> None:
    app = server.console_app
    app[PUBLIC_PATHS].add("/api/v1/auth/login")
    auth_routes.add_routes(app)
    users_routes.add_routes(app)
    audit_routes.add_routes(app)
