"""Sliding-window attempt counter per key (client address), in memory.

Per-address limits slow down guessing across many usernames; the per-user lockout (in
the database, so it holds across server nodes) stops guessing one account.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class SlidingWindow:
    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._hits: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        """Record an attempt for ``key``; False if it exceeds the limit in the window."""
        now = self.clock()
        hits = self._hits.setdefault(key, deque())
        while hits and now - hits[0] >= self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        if len(self._hits) > 10_000:
            self._forget_idle(now)
        return True

    def retry_after(self, key: str) -> float:
        hits = self._hits.get(key)
        if not hits:
            return 0.0
        return max(0.0, self.window_s - (self.clock() - hits[0]))

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, h in self._hits.items() if not h or now - h[-1] >= self.window_s]:
            del self._hits[key]
