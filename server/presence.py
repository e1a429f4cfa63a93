"""Presence that converges: the ``online`` flag re-derived from the live connections of each node.

The flag in ``devices`` is written when a channel opens and when it closes, but the closing
write can fail (the database is down at that moment: a device then stayed "online" until the
server restarted, and its offline alert never fired) and a node can die holding connections.
So every node:

* keeps a failed "offline" write and retries it at each sweep until it lands, with the time the
  channel closed (a retry never undoes a newer connection: :func:`server.devices.mark_offline`);
* every ``sweep_s`` marks each device it holds a connection for online with last_seen now, and
  marks offline every device flagged online whose last_seen is older than ``stale_s`` and that it
  holds no connection for. The node holding a connection refreshes last_seen every sweep, so
  ``stale_s`` must be at least twice ``sweep_s`` (a flag that old is left over, not live).

Hence every device's state is right within ``sweep_s`` of the database coming back (the
default 30 s; ``stale_s`` later for devices whose node died). Failures are logged once per
outage (:class:`common.outage.OutageLog`), never per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from common.outage import OutageLog

from . import devices
from .connections import ConnectionRegistry
from .store import Database

log = logging.getLogger(__name__)


class Presence:
    """The node's view of presence: the offline writes still owed, and the periodic sweep."""

    def __init__(self, db: Callable[[], Database], connections: ConnectionRegistry, *, sweep_s: float,
                 stale_s: float) -> None:
        if sweep_s <= 0 or stale_s < 2 * sweep_s:
            raise ValueError(f"presence_stale_s ({stale_s:g}) must be at least twice presence_sweep_s ({sweep_s:g}):"
                             " other nodes refresh their devices' last_seen once per sweep")
        self._db = db
        self._connections = connections
        self.sweep_s = sweep_s
        self.stale_s = stale_s
        #: Device id → when its channel closed, for the offline writes that failed.
        self.owed: dict[str, float] = {}
        self._outage = OutageLog(log, "presence update")

    async def disconnected(self, device_id: str) -> None:
        """The device's channel on this node closed: write offline now, or owe it (never raises)."""
        at = time.time()
        try:
            await devices.mark_offline(self._db(), device_id, at)
        except Exception as exc:
            self.owed[device_id] = max(at, self.owed.get(device_id, at))
            self._outage.failed(exc)
            log.debug("offline write owed", extra={"device_id": device_id})

    async def sweep(self, now: float | None = None) -> bool:
        """Settle owed offline writes, touch live connections, clear stale flags; False on a failure."""
        now = time.time() if now is None else now
        live = set(self._connections.device_ids())
        db = self._db()
        try:
            for device_id, at in list(self.owed.items()):
                if device_id not in live:  # back on this node: its hello wrote online already
                    await devices.mark_offline(db, device_id, at)
                del self.owed[device_id]
            if live:
                await devices.touch(db, sorted(live), now)
            stale = await devices.mark_stale_offline(db, before=now - self.stale_s, live=live)
        except Exception as exc:
            self._outage.failed(exc)
            return False
        self._outage.succeeded()
        if stale:
            log.info("marked %d device(s) offline: flagged online, no contact for %.0f s and no connection here",
                     len(stale), self.stale_s, extra={"device_ids": stale[:20]})
        return True

    async def run(self) -> None:
        """Sweep every ``sweep_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.sweep_s)
            await self.sweep()
