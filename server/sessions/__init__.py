"""Remote sessions on the server.

Layout: :mod:`.driver` moves each live session through its state machine, :mod:`.finish` is
the one way a session ends, :mod:`.tokens` guards the agent's tunnel, :mod:`.repository`
holds all SQL, :mod:`.views` turns sessions into JSON, :mod:`.relay` pipes the two
websockets; :mod:`.api`, :mod:`.tunnel` and :mod:`.recordings_api` declare the routes.

``setup(server)`` builds the live-session table, the finish path and the driver, and wires
them in: console routes, the agent listener's tunnel route, the ``session.answer`` and
``session.end`` handlers, and the device-revocation and account watchers. The driver is also
kept as ``server.console_app[SESSIONS]`` (tests read its live sessions and settings).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from aiohttp import web

from protocol.authority_messages import SessionChallenge
from protocol.session import SessionAnswer, SessionEnd, SessionJoinAnswer, SessionPeopleApplied
from server import devices
from server.agent_channel import authenticate_device
from server.api import add_routes
from server.api.openapi import add_schemas
from server.store import Database

from . import tickets, tunnel
from .access import AccountFollower
from .api import routes as console_routes
from .driver import SessionDriver
from .finish import Finisher
from .live import LiveTable
from .openapi import SCHEMAS
from .settings import SessionSettings
from .teamwork import Teamwork

if TYPE_CHECKING:
    from server.app import HelplineServer

__all__ = ["SESSIONS", "SessionDriver", "setup"]

SESSIONS: web.AppKey[SessionDriver] = web.AppKey("helpline_sessions", SessionDriver)


def setup(server: HelplineServer) -> None:
    def db() -> Database:
        return server.db  # opened in server.start(), after setup

    live: LiveTable = {}
    sessions = SessionDriver(db, server.connections, SessionSettings.from_config(server.config), live,
                             Finisher(db, server.connections, live))
    server.console_app[SESSIONS] = sessions
    server.agent_handlers.register(SessionAnswer, sessions.on_answer)
    server.agent_handlers.register(SessionEnd, sessions.on_agent_end)
    server.agent_handlers.register(SessionChallenge, sessions.on_challenge)
    sessions.teamwork = Teamwork(db, server.connections, live, sessions.finisher)
    server.agent_handlers.register(SessionJoinAnswer, sessions.teamwork.on_join_answer)
    server.agent_handlers.register(SessionPeopleApplied, sessions.teamwork.on_people_applied)

    async def watch_revocations() -> None:
        assert server.watcher is not None, "the watcher is created before background tasks start"
        server.watcher.on(devices.DEVICE_REVOKED, sessions.on_device_revoked)
        AccountFollower(db, live, sessions.finisher, sessions.teamwork).follow(server.watcher)  # disabled, rights

    async def stop_background(_app: web.Application) -> None:
        await sessions.close()

    server.background.append(watch_revocations)
    server.console_app.on_cleanup.append(stop_background)
    add_routes(server.console_app, console_routes(sessions))
    tickets.install(server)  # a viewer on another node's console opens the stream here with a ticket
    add_schemas(server.console_app, SCHEMAS)
    add_routes(server.agent_app, tunnel.routes(sessions, functools.partial(authenticate_device, server)))
