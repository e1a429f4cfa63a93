"""Putting declared routes on an app: the only way a Helpline app gets routes."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web

from server.errors import ApiError

from . import context, middleware
from .route import PUBLIC, Route


def install(app: web.Application) -> None:
    """Give ``app`` the route table and the error and enforcing middlewares."""
    app[context.ROUTES] = {}
    app[context.AUTHENTICATORS] = []
    app.middlewares.append(middleware.errors)
    app.middlewares.append(middleware.enforce)
    app.on_response_prepare.append(middleware.remember_started)  # errors must know when it is too late for a body


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    table = app[context.ROUTES]
    for route in routes:
        added = app.router.add_route(route.method, route.path, route.handler)
        table[added] = route


async def _unused(_request: web.Request) -> web.StreamResponse:  # pragma: no cover - never routed
    raise web.HTTPNotFound()


def add_static(app: web.Application, prefix: str, directory: Path) -> None:
    """Public static files (the console's JS/CSS); ``..`` and symlinks cannot leave ``directory``.

    Our own handler rather than aiohttp's static resource: that one answers a missing file with an
    empty ``application/octet-stream`` 404, where every error here is the JSON error body.
    """
    root = directory.resolve()

    async def static_file(request: web.Request) -> web.StreamResponse:
        path = static_path(root, request.match_info["filename"])
        if path is None:
            raise ApiError.not_found("file")
        return web.FileResponse(path)

    resource = app.router.add_resource(prefix.rstrip("/") + "/{filename:.+}")
    declared = Route("GET", prefix.rstrip("/") + "/{filename}", _unused, PUBLIC, summary="Console static file",
                     extra={"x-helpline-undocumented": True})
    for method in ("GET", "HEAD"):
        app[context.ROUTES][resource.add_route(method, static_file)] = declared


def static_path(root: Path, name: str) -> Path | None:
    """``root/name`` when it is a regular file reached without ``..``, empty segments or any symlink."""
    segments = name.split("/")
    if any(seg in ("", ".", "..") or "\\" in seg or "\x00" in seg for seg in segments):
        return None
    candidate = root.joinpath(*segments)
    try:
        if os.path.realpath(candidate, strict=True) != str(candidate) or not candidate.is_file():
            return None
    except (OSError, ValueError):
        return None
    return candidate
