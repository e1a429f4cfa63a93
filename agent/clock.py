"""The clock the agent's time rules read: wall-clock seconds and device-local time, passed in.

Grant validity is in epoch seconds and grant windows in device-local time; both come from
one injected object, so a test can step past an expiry or a window's end without waiting.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def wall(self) -> float:
        """Epoch seconds now."""

    def local(self) -> datetime:
        """The device's local time now (naive, as grant windows are written)."""


class SystemClock:
    """The real clocks."""

    def wall(self) -> float:
        return time.time()

    def local(self) -> datetime:
        return datetime.now()
