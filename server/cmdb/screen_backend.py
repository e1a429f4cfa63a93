"""The screen backend a device uses (issue 14), kept in ``devices`` so every node can show it.

The hello names it among its capabilities (``screen.backend:…``, :mod:`protocol.screen_backend`);
an agent whose backend changes while connected (a root service whose session helper started after
the hello) sends ``device.screen_backend``. Either way the latest word is stored with when it came:
the hello's in the connect's own write (``devices.mark_hello``), a change's here. Whether sessions
there are view-only (``screen.view-only`` / the change's ``view_only``) is stored with it; it counts
only beside ``wayland-portal`` (:func:`view_only`), the one backend that can be view-only.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from protocol.screen_backend import ScreenBackendChanged

from ..store import Database, Row

if TYPE_CHECKING:
    from server.agent_channel import AgentConnection
    from server.app import HelplineServer

log = logging.getLogger(__name__)


async def store(db: Database, device_id: str, backend: str | None, now: float | None = None,
                view_only: bool = False) -> None:
    """Record ``backend`` (None or "": the device says it has none) and ``view_only`` for ``device_id``."""
    await db.execute("UPDATE devices SET screen_backend = ?, screen_backend_at = ?, screen_view_only = ? WHERE id = ?",
                     (backend or None, time.time() if now is None else now, int(view_only), device_id))


def view_only(row: Row) -> bool:
    """A devices row (``screen_backend``, ``screen_view_only``) says sessions there are view-only. The backend is
    checked too: a node of the previous release updates the backend but not the flag (m0029)."""
    return bool(row["screen_view_only"]) and row["screen_backend"] == "wayland-portal"


async def stored_view_only(db: Database, device_id: str) -> bool:
    """What the devices table says for ``device_id`` (current across nodes: every hello and change is written)."""
    row = await db.fetchone("SELECT screen_backend, screen_view_only FROM devices WHERE id = ?", (device_id,))
    return row is not None and view_only(row)


async def on_changed(conn: AgentConnection, message: ScreenBackendChanged) -> None:
    log.info("screen backend changed", extra={"device_id": conn.device_id, "backend": message.backend,
                                              "view_only": message.view_only})
    await store(conn.server.db, conn.device_id, message.backend, view_only=message.view_only)


def attach(server: HelplineServer) -> None:
    server.agent_handlers.register(ScreenBackendChanged, on_changed)
