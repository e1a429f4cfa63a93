"""Which consent UI a desktop gets, chosen at run time for each window and logged.

An X session (no ``WAYLAND_DISPLAY``) gets the Tk windows of :mod:`.tk` as always. A Wayland
session gets Tk through XWayland while its X display answers, and the native zenity windows of
:mod:`.zenity` when it has none (GNOME without XWayland, ``DISPLAY`` unset) or it does not answer.
The choice is made again for every prompt and indicator — XWayland can be started on demand or go
away — and both share one :class:`~.guard.PromptGuard`, so remote input waits for either.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Mapping

from .guard import PromptGuard
from .tk import TkConsentUI
from .ui import ConsentUI, Indicator, IndicatorInfo, PromptAnswer, PromptRequest
from .zenity import ZenityConsentUI

log = logging.getLogger(__name__)

#: How long an X display has to answer before the native Wayland path is taken.
X_PROBE_TIMEOUT_S = 5.0


def _x_answers(display: str) -> bool:
    from Xlib.error import ConnectionClosedError, DisplayError, XauthError

    from ..screen.xdisplay import open_display

    try:
        open_display(display).close()
    except (DisplayError, ConnectionClosedError, XauthError, OSError, ValueError) as exc:  # refused, no auth
        log.info("consent UI: X display %r does not answer: %s", display, exc)
        return False
    return True


#: Probes still running per display: an X server that accepts and never answers would hang its
#: probe's thread for good, so such a display is not probed again until that one returns.
_probing: dict[str, asyncio.Future[bool]] = {}


def _probe_in_daemon_thread(display: str) -> asyncio.Future[bool]:
    """Run :func:`_x_answers` on a daemon thread of its own, not the loop's default executor: a hung
    probe must not hold a worker every other ``to_thread`` call (recovery, inventory) needs."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bool] = loop.create_future()

    def settle(answer: bool | BaseException) -> None:
        _probing.pop(display, None)
        if future.done():
            return
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)

    def run() -> None:
        try:
            answer: bool | BaseException = _x_answers(display)
        except BaseException as exc:  # handed to the awaiting coroutine, never lost in the thread
            answer = exc
        try:
            loop.call_soon_threadsafe(settle, answer)
        except RuntimeError:  # the loop closed while the probe hung: nobody waits any more
            return

    _probing[display] = future
    threading.Thread(target=run, name=f"x-probe {display}", daemon=True).start()
    return future


async def x_reachable(display: str | None) -> bool:
    """Whether ``display`` accepts an X connection (authorized) within :data:`X_PROBE_TIMEOUT_S`."""
    if not display:
        return False
    if display in _probing:
        log.info("consent UI: X display %r has not answered an earlier probe yet", display)
        return False
    try:
        return await asyncio.wait_for(asyncio.shield(_probe_in_daemon_thread(display)), X_PROBE_TIMEOUT_S)
    except TimeoutError:
        log.info("consent UI: X display %r did not answer within %.0f s", display, X_PROBE_TIMEOUT_S)
        return False


class WaylandConsentUI:
    """Tk through XWayland where an X display answers, else native zenity windows (module docstring)."""

    def __init__(self, display: str | None, wayland: str, prompts: PromptGuard | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.prompts = prompts if prompts is not None else PromptGuard()
        self.tk = TkConsentUI(display or "", self.prompts)
        self.native = ZenityConsentUI(wayland, self.prompts, env=dict(env if env is not None else os.environ))

    async def pick(self) -> TkConsentUI | ZenityConsentUI:
        """The UI for the next window, logged."""
        if await x_reachable(self.tk.display):
            log.info("consent UI: Tk through XWayland on %s", self.tk.display)
            return self.tk
        log.info("consent UI: native Wayland (zenity) on %s: no usable X display (DISPLAY=%r)",
                 self.native.wayland, self.tk.display or "")
        return self.native

    async def prompt(self, request: PromptRequest) -> PromptAnswer:
        return await (await self.pick()).prompt(request)

    async def indicator(self, info: IndicatorInfo) -> Indicator:
        return await (await self.pick()).indicator(info)


def consent_ui(display: str | None, wayland: str | None = None, prompts: PromptGuard | None = None) -> ConsentUI:
    """The consent UI of a desktop: Tk on ``display`` under X; under Wayland (``wayland``, default
    ``$WAYLAND_DISPLAY``) chosen per window between Tk on XWayland and native zenity windows."""
    wayland = wayland if wayland is not None else os.environ.get("WAYLAND_DISPLAY", "")
    if not wayland:
        return TkConsentUI(display, prompts)
    return WaylandConsentUI(display, wayland, prompts)
