"""Server feature: support requests (issue 18) — the device's messages, the REST routes, the live queue,
the chat announcements and the self-service fixes' scripts (server/fixscripts), composed in :func:`setup`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import api
from ..fixscripts import feature as fix_scripts
from . import api as request_api
from .announce import Announcer
from .config import RequestsConfig
from .device import DeviceRequests
from .events import RequestEvent
from .live import QueueHub

if TYPE_CHECKING:
    from ..app import HelplineServer

log = logging.getLogger(__name__)


def config_of(server: HelplineServer) -> RequestsConfig:
    found = getattr(server.config, "requests", None)
    return found if isinstance(found, RequestsConfig) else RequestsConfig()


def setup(server: HelplineServer) -> None:
    config = config_of(server)
    announcer = Announcer(config, server.config.console_url)
    device = DeviceRequests(server, announcer)
    device.register()
    hub = QueueHub()
    hub.attach(server.console_app, lambda: server.watcher)  # a rights change closes the user's queue pages

    async def to_queue(event: RequestEvent) -> None:
        await hub.on_event(server.db, event)

    server.request_events.subscribe(device.on_event)
    server.request_events.subscribe(to_queue)
    api.add_routes(server.console_app, request_api.routes(hub))
    fix_scripts.setup(server)  # the scripts self-service fixes name (the requests' Tier 0)
    if announcer.enabled:
        server.background.append(lambda: announcer.run(lambda: server.db))
        log.info("support requests announced", extra={"targets": sorted(config.targets)})
