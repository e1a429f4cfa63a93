"""Putting declared routes on an app: the only way a Helpline app gets routes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from aiohttp import web

from . import context, middleware
from .route import PUBLIC, Route


def install(app: web.Application) -> None:
    """Give ``app`` the route table and the error and enforcing middlewares."""
    app[context.ROUTES] = {}
    app[context.AUTHENTICATORS] = []
    app.middlewares.append(middleware.errors)
    app.middlewares.append(middleware.enforce)


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    table = app[context.ROUTES]
    for route in routes:
        added = app.router.add_route(route.method, route.path, route.handler)
        table[added] = route


async def _unused(_request: web.Request) -> web.StreamResponse:  # pragma: no cover - never routed
    raise web.HTTPNotFound()


def add_static(app: web.Application, prefix: str, directory: Path) -> None:
    """Public static files (the console's JS/CSS); ``..`` cannot leave ``directory``."""
    resource = app.router.add_static(prefix, directory, follow_symlinks=False, append_version=False)
    declared = Route("GET", prefix.rstrip("/") + "/{filename}", _unused, PUBLIC, summary="Console static file",
                     extra={"x-helpline-undocumented": True})
    for added in resource:
        app[context.ROUTES][added] = declared
