"""Screen streaming for remote sessions: capture → tile diff → encode → tunnel.

Entry point: :func:`run_screen_session`. Seams for tests: :class:`Tunnel`,
:class:`ScreenGrabber`, :class:`PointerSource`, :class:`CursorShapeSource`, and ``agent.input_injector.InputInjector``.
"""

from .capture import Monitor, MssGrabber, ScreenGrabber
from .cursor_shape import CursorImage, CursorShapeSource, XFixesCursorShapes, open_cursor_shapes
from .flow import FlowControl, FlowSettings
from .pointer import PointerSource, PynputPointer
from .session import SessionStats, run_screen_session
from .tunnel import Tunnel

__all__ = [
    "CursorImage",
    "CursorShapeSource",
    "FlowControl",
    "FlowSettings",
    "Monitor",
    "MssGrabber",
    "PointerSource",
    "PynputPointer",
    "ScreenGrabber",
    "SessionStats",
    "Tunnel",
    "XFixesCursorShapes",
    "open_cursor_shapes",
    "run_screen_session",
]
