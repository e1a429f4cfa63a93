"""Who runs a remote session's screen: the seam between the session manager and the screen code.

The session manager (:mod:`agent.sessions`) owns consent, the tunnel and the session's life; a
:class:`ScreenRunner` turns the tunnel into a screen session. :func:`run_in_process` captures
and injects right here, on ``display`` (a desktop agent, the demo, the tests). On an installed
device the root service has no display: :meth:`agent.desktop.broker.DesktopBroker.run_screen`
relays the tunnel to the session helper of the person who consented, which runs the same
:func:`~agent.screen.session.run_screen_session` as that user.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # the screen package loads numpy and the capture code: only when a session runs
    from .input_injector import InputGate
    from .screen.session import SessionStats
    from .screen.tunnel import Tunnel


class ScreenRunner(Protocol):
    """Stream the screen for remote session ``session_id`` over ``tunnel`` until it closes or ``stop`` is set."""

    def __call__(self, session_id: str, tunnel: Tunnel, /, *, mode: Literal["view", "control"],
                 display: str | None, stop: asyncio.Event, input_gate: InputGate | None,
                 **kwargs: Any) -> Awaitable[SessionStats]: ...


async def run_in_process(session_id: str, tunnel: Tunnel, /, *, mode: Literal["view", "control"],
                         display: str | None, stop: asyncio.Event, input_gate: InputGate | None,
                         **kwargs: Any) -> SessionStats:
    """The screen session in this process, on ``display`` (with the in-session toolkit when ``toolkit`` caps are
    given: :mod:`agent.toolkit`)."""
    from .consent.guard import PromptGuard
    from .screen.session import run_screen_session
    from .shell.tunnel import session_shell
    from .toolkit.tunnel import seen_by_device, toolkit_tunnel

    caps, technician = kwargs.pop("toolkit", None), str(kwargs.pop("technician", ""))
    shell_user = kwargs.pop("shell_user", None)  # direct mode as root: the shell runs as [agent] session_user
    indicator = kwargs.pop("indicator", None)  # with a chat window (agent.consent.tk.TkIndicator) or not
    caps, device = seen_by_device(caps, indicator)  # no chat window to show it: no toolkit
    gate = input_gate if isinstance(input_gate, PromptGuard) else None  # fetch requests suspend input too
    note = device.note if device is not None else None
    async with toolkit_tunnel(tunnel, caps, technician=technician, device=device, gate=gate) as wrapped, \
            session_shell(wrapped, caps, user=shell_user if isinstance(shell_user, str) else None,
                          note=note) as shelled:
        return await run_screen_session(shelled, mode=mode, display=display, stop=stop, input_gate=input_gate,
                                        **kwargs)
