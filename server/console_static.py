"""Serve the technician console (``console/``) with a strict Content-Security-Policy.

Every console-listener response — pages, static files, API answers, errors — gets the
security headers (through ``on_response_prepare``, so even the enforcing middleware's 401s do).
The page and its static files are public routes (:mod:`server.api`): the login form is there.
The CSP allows scripts and styles from our own origin only: no inline script, no inline
``style`` attributes in markup, no ``eval``; the page cannot be framed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from . import api
from .agent_channel import SERVER_KEY

if TYPE_CHECKING:
    from .app import HelplineServer

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"


def content_security_policy(host: str, nodes: Iterable[str] = ()) -> str:
    """``nodes``: the other nodes' console origins (server/bus/nodes.py), where a viewer opens the stream of a
    session live on another node (with a ticket: server/sessions/tickets.py)."""
    others = "".join(f" wss://{origin.split('://', 1)[1]}" for origin in sorted(nodes) if origin.startswith("https://"))
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        f"connect-src 'self' wss://{host}{others}",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Strict-Transport-Security": "max-age=31536000",
}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    bus = request.app[SERVER_KEY].bus
    nodes = bus.nodes.origins() - {f"https://{request.host}"} if bus is not None else set()
    response.headers["Content-Security-Policy"] = content_security_policy(request.host, nodes)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")
    elif request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-cache")


async def index(_request: web.Request) -> web.StreamResponse:
    """The technician console"""
    return web.FileResponse(CONSOLE_DIR / "index.html", headers={"Cache-Control": "no-store",
                                                                 "Content-Type": "text/html; charset=utf-8"})


def setup(server: HelplineServer) -> None:
    app = server.console_app
    app.on_response_prepare.append(add_security_headers)
    page = api.Route("GET", "/", index, api.PUBLIC, content={"text/html": {"schema": {"type": "string"}}},
                     extra={"x-helpline-undocumented": True})
    api.add_routes(app, [page])
    api.add_static(app, "/static/", CONSOLE_DIR / "static")
