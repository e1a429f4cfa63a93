"""Remote sessions on the server: the API, the session registry, and the relay.

``setup(server)`` adds the REST/websocket routes on the console app, the tunnel endpoint
on the agent app, the ``session.answer``/``session.end`` handlers and the grant-revocation
watcher. The live registry is ``server.console_app[SESSIONS]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .manager import SESSIONS, SessionManager

if TYPE_CHECKING:
    from ..app import HelplineServer

__all__ = ["SESSIONS", "SessionManager", "setup"]


def setup(server: HelplineServer) -> None:
    from .api import setup as setup_api
    from .tunnel import setup as setup_tunnel

    manager = SessionManager(server)
    server.console_app[SESSIONS] = manager
    manager.install()
    setup_api(server)
    setup_tunnel(server)
