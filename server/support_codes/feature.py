"""Wiring support codes into the server: settings checked, pepper loaded, routes added."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from common.config import ConfigError
from common.files import private_directory
from server.api import add_routes
from server.sessions import SESSIONS
from server.store import Database

from . import api, connection
from .codes import load_pepper
from .redeem import Redeemer
from .settings import SupportCodeSettings, guess_arithmetic

if TYPE_CHECKING:
    from server.app import HelplineServer

log = logging.getLogger(__name__)


def settings_of(server: HelplineServer) -> SupportCodeSettings:
    """The server's ``support_codes`` settings (ConfigError, so no start, when the bound does not hold)."""
    given = getattr(server.config, "support_codes", None)
    if isinstance(given, SupportCodeSettings):
        given.check()
        return given
    return SupportCodeSettings.from_config(given)


def setup(server: HelplineServer) -> None:
    settings = settings_of(server)
    log.info("support codes: guessing bound %s", guess_arithmetic(settings))
    if getattr(server.config, "nats_url", "") and settings.nodes == 1:
        raise ConfigError("support_codes.nodes is 1 but nats_url is set (several nodes): each node counts its own "
                          "redeem attempts, so the guessing bound would be too low; set [server.support_codes] nodes "
                          "(HELPLINE_SUPPORT_CODES_NODES) to the number of nodes")

    def db() -> Database:
        return server.db

    pepper = load_pepper(private_directory(server.config.data_dir))
    sessions = server.console_app[SESSIONS]
    redeemer = Redeemer(db, settings, pepper, server.audit_throttle)
    add_routes(server.console_app, api.routes(server, sessions, settings, pepper)
               + connection.routes(server, sessions, redeemer))
