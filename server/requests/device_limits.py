"""How much one device may send about support requests: per-device sliding-window rate limits.

Every ``request.open`` may carry a 2 MiB screenshot, every ``request.add`` up to 4000 characters
with an audit record and an event row, every ``fix.outcome`` a hash-chained audit record. The cap on
open requests alone does not bound an open → withdraw loop, so a broken or hostile device is held
to a few new requests an hour and a few notes and outcomes a minute; past that its messages are
answered with a ``rate_limited`` error and not stored. In memory and per node: a device holds one
connection, on one node, at a time.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: kind → (how many, per how many seconds).
LIMITS: dict[str, tuple[int, float]] = {
    "open": (30, 3600.0),      # new requests (a resend of one already made is free)
    "note": (20, 60.0),        # request.add
    "outcome": (30, 60.0),     # fix.outcome
}

#: Devices tracked; beyond this the idle ones are forgotten first.
MAX_DEVICES = 100_000


@dataclass
class DeviceLimits:
    """Sliding windows per (device, kind); :meth:`take` says whether one more is allowed now."""

    limits: dict[str, tuple[int, float]] = field(default_factory=lambda: dict(LIMITS))
    clock: Callable[[], float] = time.monotonic
    _hits: dict[tuple[str, str], deque[float]] = field(default_factory=dict)

    def take(self, device_id: str, kind: str) -> bool:
        """Count one ``kind`` for the device and return True, or False (nothing counted) when over the limit."""
        limit, window = self.limits[kind]
        now = self.clock()
        key = (device_id, kind)
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= MAX_DEVICES:
                self._forget_idle(now)
            hits = self._hits[key] = deque()
        while hits and now - hits[0] >= window:
            hits.popleft()
        if len(hits) >= limit:
            return False
        hits.append(now)
        return True

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, h in self._hits.items() if not h or now - h[-1] >= self.limits[k[1]][1]]:
            del self._hits[key]
        if len(self._hits) >= MAX_DEVICES:  # all busy (a flood of identities): drop the oldest
            del self._hits[next(iter(self._hits))]
