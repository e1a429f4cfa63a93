"""Keeps the server's word on this device's screen backend current in service mode (issue 14).

The root service's hello names the backend its session helper reported (``screen.backend:…``),
but a helper that checks in after the hello — the usual order at boot: the service connects,
then someone logs in — or one that goes away would otherwise be known only at the next
reconnection. So whenever the helpers change, and once more right after each welcome (a helper
may have arrived between the hello and it), the backend and whether it is view-only (the helper's
word: a ScreenCast-only portal, ``screen.view-only`` in the hello) are compared with what the server
was last told and, if either differs, sent as ``device.screen_backend``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from protocol.screen_backend import VIEW_ONLY, ScreenBackendChanged, capability

if TYPE_CHECKING:
    from ..control_client import AgentClient
    from .broker import DesktopBroker

log = logging.getLogger(__name__)


class ScreenBackendReport:
    """The hello's capability source and the sender of changes, for one client and its broker."""

    def __init__(self, client: AgentClient, broker: DesktopBroker) -> None:
        self.client, self.broker = client, broker
        #: What the server was last told (backend, view-only; "" nothing), by the hello or a change message.
        self.said: tuple[str, bool] = ("", False)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self) -> None:
        self.client.capability_sources.append(self.capabilities)
        self.client.on_ready.append(lambda _client: self.update())
        self.broker.on_helpers_changed.append(self._changed)

    def current(self) -> tuple[str, bool]:
        """The backend of the first live helper that named one ("" none), and whether it said view-only."""
        return next(((link.screen_backend, link.screen_view_only) for link in self.broker.helpers.values()
                     if link.screen_backend and not link.closed.is_set()), ("", False))

    async def capabilities(self) -> list[str]:
        """For the hello: what it says is what the server will know."""
        self.said = self.current()
        backend, view_only = self.said
        return capability(backend) + ([VIEW_ONLY] if view_only else [])

    def _changed(self) -> None:
        task = asyncio.ensure_future(self.update())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def update(self) -> None:
        """Send the backend and view-only if either differs from what the server was told; offline, the next hello
        carries them."""
        async with self._lock:
            now = self.current()
            if now == self.said or not self.client.ready.is_set():
                return
            backend, view_only = now
            try:
                await self.client.send(ScreenBackendChanged(backend=backend, view_only=view_only))  # type: ignore[arg-type]
            except (ConnectionError, RuntimeError) as exc:
                log.info("screen backend change waits for the next hello: %s", exc)
                return
            log.info("screen backend sent", extra={"backend": backend or "none", "view_only": view_only,
                                                   "was": self.said[0] or "none"})
            self.said = now
