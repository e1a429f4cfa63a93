"""Screen streaming for remote sessions: capture → tile diff → encode → tunnel.

Entry point: :func:`run_screen_session`. Seams for tests and other backends: :class:`Tunnel`,
:class:`ScreenGrabber`, :class:`DamageSource` (where the screen changed: X DAMAGE today, PipeWire
next), :class:`PointerSource`, :class:`CursorShapeSource`, and ``agent.input_injector.InputInjector``.
"""

from .capture import Monitor, MssGrabber, ScreenGrabber
from .cursor_shape import CursorImage, CursorShapeSource, XFixesCursorShapes, open_cursor_shapes
from .damage import Damage, DamageSource, XDamageSource, open_damage_source
from .flow import FlowControl, FlowSettings
from .pointer import PointerSource, PynputPointer
from .session import SessionStats, run_screen_session
from .tunnel import Tunnel

__all__ = [
    "CursorImage",
    "CursorShapeSource",
    "Damage",
    "DamageSource",
    "FlowControl",
    "FlowSettings",
    "Monitor",
    "MssGrabber",
    "PointerSource",
    "PynputPointer",
    "ScreenGrabber",
    "SessionStats",
    "Tunnel",
    "XDamageSource",
    "XFixesCursorShapes",
    "open_cursor_shapes",
    "open_damage_source",
    "run_screen_session",
]
