"""The screenshot a user may attach: the screen as it is now, as PNG, small enough to send.

Captured in the user's own process (``helpline help``) through the screen code's grabber (mss),
monitor 1 (the primary), shown to the user before anything is sent. Halved until the PNG fits
:data:`protocol.requests.MAX_SCREENSHOT_BYTES` (a 4K desktop of photos needs it; a usual screen
does not).
"""

from __future__ import annotations

import numpy as np

from protocol.requests import MAX_SCREENSHOT_BYTES

from ..screen.capture import Frame, MssGrabber


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


def capture(display: str | None) -> bytes:
    """The primary monitor now, as PNG (b"" when it cannot fit); raises OSError-like errors of mss."""
    grabber = MssGrabber(display)
    try:
        monitors = grabber.monitors()
        frame = grabber.grab(1 if len(monitors) > 1 else 0)
    finally:
        grabber.close()
    return fit(frame)
