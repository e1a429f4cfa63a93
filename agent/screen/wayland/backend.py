"""Which capture backend a screen session uses, and the Wayland one put together.

The choice is made at run time from the user's session, as logind and the display manager
describe it to the session helper: ``XDG_SESSION_TYPE`` first (``wayland`` or ``x11``), else
the presence of ``WAYLAND_DISPLAY``. ``HELPLINE_SCREEN_BACKEND`` (``x11`` / ``wayland``)
overrides both, for an administrator who knows better and for benchmarks. Under Wayland an X11
grab would see only XWayland windows (or nothing), so there is no silent fallback to X11:
a Wayland session whose compositor offers no remote-desktop API ends the session with the
reason, which the technician sees.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .frames import PipeWireCapture
from .injector import MutterInjector
from .mutter import MutterSession

log = logging.getLogger(__name__)

Backend = Literal["x11", "wayland"]


def choose_backend(env: Mapping[str, str] | None = None, display: str | None = None) -> Backend:
    """X11 or Wayland for the session described by ``env`` (default: this process's environment).

    A ``display`` that is not the session's own ``DISPLAY`` names another X server (an Xvfb of
    a test or the demo started from a Wayland desktop): that one is captured with X11.
    """
    env = os.environ if env is None else env
    forced = env.get("HELPLINE_SCREEN_BACKEND", "").strip().lower()
    if forced in ("x11", "wayland"):
        return forced  # type: ignore[return-value]
    if display and display != env.get("DISPLAY"):
        return "x11"
    kind = env.get("XDG_SESSION_TYPE", "").strip().lower()
    if kind in ("x11", "wayland"):
        return kind  # type: ignore[return-value]
    return "wayland" if env.get("WAYLAND_DISPLAY") else "x11"


@dataclass
class MutterBackend:
    """A started Mutter remote-desktop session and the reader of its stream."""

    session: MutterSession
    capture: PipeWireCapture
    #: Reported in the session's stats and logs.
    name: str = "wayland-mutter"

    @classmethod
    async def open(cls, bus_address: str | None = None) -> MutterBackend:
        session = await MutterSession.open(bus_address)
        s = session.stream
        try:
            capture = PipeWireCapture(s.node_id, s.x, s.y, s.w, s.h)
        except BaseException:
            await session.close()
            raise
        return cls(session, capture)

    def injector(self) -> MutterInjector:
        """An injector bound to this session, for the running event loop."""
        return MutterInjector(self.session, asyncio.get_running_loop())

    async def close(self) -> None:
        await asyncio.to_thread(self.capture.close)
        await self.session.close()
