"""Tickets (issue 19): ServiceNow, Jira Service Management and signed webhooks; write-back at session end.

Layout: :mod:`.connectors` speaks each system's API through :mod:`.http` (TLS, bounded reads,
error bodies, rate limits), :mod:`.webhook` signs (and verifies) webhook bodies,
:mod:`.secrets_box` encrypts credentials with a key file outside the database,
:mod:`.repository` holds all SQL, :mod:`.compose` writes the note, :mod:`.outbox` delivers
it once, :mod:`.api` declares the routes.

``setup(server)`` (after :mod:`server.sessions`) hooks the outbox into the session finish path,
runs its worker in the background and adds the routes; the outbox is kept as
``server.console_app[TICKETS]`` (tests tune its settings).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from server.api import add_routes

from .api import routes
from .outbox import Outbox
from .secrets_box import SecretBox

if TYPE_CHECKING:
    from server.app import HelplineServer

__all__ = ["TICKETS", "Outbox", "setup"]

TICKETS: web.AppKey[Outbox] = web.AppKey("helpline_tickets", Outbox)


def setup(server: HelplineServer) -> None:
    from server.sessions import SESSIONS

    def recording_url(session_id: str) -> str:
        return f"https://{server.config.public_host}:{server.console_port}/#/recordings/{session_id}"

    box = SecretBox(server.config.data_dir)
    outbox = Outbox(lambda: server.db, box, recording_url)
    server.console_app[TICKETS] = outbox
    server.console_app[SESSIONS].finisher.on_finished.append(outbox.session_ended)
    server.background.append(outbox.run)
    add_routes(server.console_app, routes(box, outbox))
