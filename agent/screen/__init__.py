"""Screen streaming for remote sessions: capture → tile diff → encode → tunnel.

Entry point: :func:`run_screen_session`. Seams for tests: :class:`Tunnel`,
:class:`ScreenGrabber`, :class:`PointerSource`, and ``agent.input_injector.InputInjector``.
"""

from .capture import Monitor, MssGrabber, ScreenGrabber
from .flow import FlowControl, FlowSettings
from .pointer import PointerSource, PynputPointer
from .session import SessionStats, run_screen_session
from .tunnel import Tunnel

__all__ = [
    "FlowControl",
    "FlowSettings",
    "Monitor",
    "MssGrabber",
    "PointerSource",
    "PynputPointer",
    "ScreenGrabber",
    "SessionStats",
    "Tunnel",
    "run_screen_session",
]
