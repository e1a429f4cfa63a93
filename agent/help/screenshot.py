"""The screenshot a user may attach: each monitor as it is now, as PNG, small enough to send.

Captured in the user's own process (``helpline help``) through the screen code's grabber (mss), one
PNG per monitor (RandR monitors, as the remote session lists them), taken before the window appears.
The window shows the one with the focused window first (X input focus or the window manager's
``_NET_ACTIVE_WINDOW``; else the pointer's monitor; else the primary) and lets the user pick another;
only the one shown, and ticked, is sent. Each is halved until its PNG fits
:data:`protocol.requests.MAX_SCREENSHOT_BYTES` (a 4K desktop of photos needs it; a usual screen
does not).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import numpy as np

from protocol.requests import MAX_SCREENSHOT_BYTES

from ..screen.capture import Frame, Monitor, MssGrabber
from .shots import Shot, Shots

log = logging.getLogger(__name__)

#: Monitors captured at most (each is a PNG of up to 2 MiB held in the window's memory).
MAX_MONITORS = 8


def to_png(frame: Frame, level: int = 6) -> bytes:
    import mss.tools

    rgb = np.ascontiguousarray(frame[:, :, 2::-1])  # BGRA → RGB
    data = mss.tools.to_png(rgb.tobytes(), (rgb.shape[1], rgb.shape[0]), level=level)
    assert data is not None
    return bytes(data)


def fit(frame: Frame, limit: int = MAX_SCREENSHOT_BYTES) -> bytes:
    """PNG of ``frame``, halved until it is at most ``limit`` bytes."""
    while True:
        data = to_png(frame)
        if len(data) <= limit or min(frame.shape[:2]) < 64:
            return data if len(data) <= limit else b""
        frame = frame[::2, ::2]


def monitor_at(monitors: list[Monitor], point: tuple[int, int]) -> int | None:
    """The index (mss numbering, 1…) of the monitor holding ``point``, or None."""
    x, y = point
    for index, m in enumerate(monitors[1:], start=1):
        if m.x <= x < m.x + m.w and m.y <= y < m.y + m.h:
            return index
    return None


def focus_point(display: str | None) -> tuple[int, int] | None:
    """Where the user is, in root coordinates: the centre of the focused window (the window manager's active
    window, else the X input focus), else the pointer; None without an answer (no X, no focus)."""
    from Xlib import X
    from Xlib import error as xerror

    from ..screen.xdisplay import open_display

    try:
        conn = open_display(display)
    except Exception as exc:  # no X here (Wayland without XWayland): the primary monitor then
        log.info("no X connection for the focused window: %s", exc)
        return None
    try:
        root = conn.screen().root
        window = _active_window(conn, root)
        if window is None:
            focus = conn.get_input_focus().focus
            if not isinstance(focus, int) and focus.id not in (root.id, X.NONE, X.PointerRoot):
                window = focus
        if window is not None:
            with contextlib.suppress(xerror.XError):  # the window closed meanwhile: the pointer decides
                geometry = window.get_geometry()
                at = window.translate_coords(root, 0, 0)
                return -at.x + geometry.width // 2, -at.y + geometry.height // 2
        pointer = root.query_pointer()
        return int(pointer.root_x), int(pointer.root_y)
    except xerror.XError as exc:
        log.info("the focused window could not be found: %s", exc)
        return None
    finally:
        conn.close()


def _active_window(conn: Any, root: Any) -> Any:
    prop = root.get_full_property(conn.intern_atom("_NET_ACTIVE_WINDOW"), 0)  # 0 = AnyPropertyType
    if prop is None or not len(prop.value) or not int(prop.value[0]):
        return None
    return conn.create_resource_object("window", int(prop.value[0]))


def capture_all(display: str | None) -> Shots:
    """Every monitor now (the whole screen when RandR lists none), the focused one chosen."""
    grabber = MssGrabber(display)
    try:
        monitors = grabber.monitors()
        indexes = list(range(1, len(monitors)))[:MAX_MONITORS] or [0]
        frames = [(i, grabber.grab(i)) for i in indexes]
    finally:
        grabber.close()
    shots: list[Shot] = []
    kept: list[int] = []
    for index, frame in frames:
        png = fit(frame)
        if png:
            m = monitors[index]
            name = f"Screen {len(shots) + 1}" + (" (main)" if m.primary else "")
            shots.append(Shot(png, f"{name} — {m.w}×{m.h}"))
            kept.append(index)
    point = focus_point(display) if len(shots) > 1 else None
    focused = monitor_at(monitors, point) if point is not None else None
    primary = next((i for i in kept if monitors[i].primary), None)
    for wanted in (focused, primary):
        if wanted in kept:
            return Shots(shots, kept.index(wanted))
    return Shots(shots, 0)


def capture(display: str | None) -> bytes:
    """The monitor with the focused window now, as PNG (b"" when none fits); raises mss's errors."""
    return capture_all(display).default
