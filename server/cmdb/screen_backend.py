"""The screen backend a device uses (issue 14), kept in ``devices`` so every node can show it.

The hello names it among its capabilities (``screen.backend:…``, :mod:`protocol.screen_backend`);
an agent whose backend changes while connected (a root service whose session helper started after
the hello) sends ``device.screen_backend``. Either way the latest word is stored with when it came:
the hello's in the connect's own write (``devices.mark_hello``), a change's here.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from protocol.screen_backend import ScreenBackendChanged

from ..store import Database

if TYPE_CHECKING:
    from server.agent_channel import AgentConnection
    from server.app import HelplineServer

log = logging.getLogger(__name__)


async def store(db: Database, device_id: str, backend: str | None, now: float | None = None) -> None:
    """Record ``backend`` (None or "": the device says it has none) for ``device_id``."""
    await db.execute("UPDATE devices SET screen_backend = ?, screen_backend_at = ? WHERE id = ?",
                     (backend or None, time.time() if now is None else now, device_id))


async def on_changed(conn: AgentConnection, message: ScreenBackendChanged) -> None:
    log.info("screen backend changed", extra={"device_id": conn.device_id, "backend": message.backend})
    await store(conn.server.db, conn.device_id, message.backend)


def attach(server: HelplineServer) -> None:
    server.agent_handlers.register(ScreenBackendChanged, on_changed)
