"""Cross-site websocket hijacking defence: every console websocket upgrade checks Origin."""

from __future__ import annotations

from aiohttp import web

from ..agent_channel import SERVER_KEY


def allowed_origins(request: web.Request) -> set[str]:
    server = request.app[SERVER_KEY]
    own = {f"https://{request.host}", f"https://{server.config.public_host}:{server.console_port}"}
    return own | set(server.config.allowed_origins)


def check_origin(request: web.Request) -> None:
    """Raise 403 unless the request's Origin is the console's own (or explicitly allowed)."""
    origin = request.headers.get("Origin")
    if origin is None or origin not in allowed_origins(request):
        raise web.HTTPForbidden(text='{"error":{"code":"bad_origin","message":"cross-origin websocket refused"}}',
                                content_type="application/json")
