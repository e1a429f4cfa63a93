"""Console accounts: users, passwords (scrypt), TOTP, cookie sessions, API tokens, live sockets.

``setup(server)`` plugs the cookie and bearer authenticators into the console app (the
enforcing middleware of :mod:`server.api` runs them and checks CSRF on cookie writes), builds
the login service and the live-socket registry, and closes websockets when a user is disabled
or a session revoked (also when that happens in another process, via the event table).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..api.context import AUTHENTICATORS
from . import admin, authn, live
from .login import LoginService

if TYPE_CHECKING:
    from ..app import HelplineServer

log = logging.getLogger(__name__)

LOGIN_SERVICE: web.AppKey[LoginService] = web.AppKey("helpline_login_service", LoginService)


def setup(server: HelplineServer) -> None:
    app = server.console_app
    app[live.LIVE] = live.LiveSockets()
    app[AUTHENTICATORS].extend([authn.cookie_authenticator, authn.bearer_authenticator])
    authn.track_usage(server)

    async def on_startup(app: web.Application) -> None:
        app[LOGIN_SERVICE] = LoginService(server.db, audit_throttle=server.audit_throttle)
        registry = app[live.LIVE]

        async def user_ended(user_id: str, payload: dict[str, Any]) -> None:
            closed = await registry.close_user(user_id, str(payload.get("reason", "account disabled")))
            if closed:
                log.warning("closed %d websocket(s) of user %s", closed, user_id)

        async def session_ended(session_id: str, payload: dict[str, Any]) -> None:
            closed = await registry.close_session(session_id, str(payload.get("reason", "session revoked")))
            if closed:
                log.info("closed %d websocket(s) of console session %s", closed, session_id)

        if server.watcher is not None:
            server.watcher.on(admin.USER_DISABLED, user_ended)
            server.watcher.on(admin.SESSION_REVOKED, session_ended)

    app.on_startup.append(on_startup)
