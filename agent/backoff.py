"""Reconnect backoff: exponential with full jitter, reset by a connection that stayed up.

Theory of operation. Every ended attempt — a connection that failed to open, or one that
dropped — asks :meth:`Backoff.next_delay` how long to wait. The n-th failure in a row waits
``random(0, min(cap, base·2^(n-1)))``: a fleet reconnecting at once spreads out, and a server
that stays down is asked ever less often. Failures only count *in a row*: when the connection
that just ended had been up (welcomed, :meth:`Backoff.connected`) for at least ``reset_after_s``,
the count starts again at zero, so the first retry waits at most ``base`` seconds.

Without the reset the count only grew: after a few months every agent retried after a random
0–60 s, and a routine server restart with 0–1 s of downtime took 45–60 s to bring three agents
back (issue 12). A connection that drops sooner than ``reset_after_s`` (a server that accepts and
falls over, a storm) keeps the count, so storms still spread out.

Pure: the caller passes the time; the random source is injectable for tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def full_jitter(attempt: int, *, base: float = 1.0, cap: float = 60.0,
                rng: Callable[[], float] = random.random) -> float:
    """``random(0, min(cap, base·2^attempt))``; ``attempt`` counts from 0."""
    return float(rng() * min(cap, base * (2 ** min(max(attempt, 0), 32))))


class Backoff:
    """The reconnect delay state of one client (the agent, or one simulated agent in a benchmark)."""

    def __init__(self, *, base_s: float = 1.0, cap_s: float = 60.0, reset_after_s: float = 60.0,
                 rng: Callable[[], float] = random.random) -> None:
        if base_s <= 0 or cap_s <= 0 or reset_after_s < 0:
            raise ValueError("backoff base and cap must be positive and reset_after_s not negative")
        self.base_s, self.cap_s, self.reset_after_s = base_s, cap_s, reset_after_s
        self._rng = rng
        #: Attempts that ended in a row without a connection lasting ``reset_after_s``.
        self.failures = 0
        self._up_since: float | None = None

    def connected(self, now: float) -> None:
        """The server welcomed us at ``now`` (a connection counts from here, not from TCP connect)."""
        self._up_since = now

    def next_delay(self, now: float) -> float:
        """An attempt or a connection ended at ``now``: seconds to wait before the next attempt."""
        if self._up_since is not None and now - self._up_since >= self.reset_after_s:
            self.failures = 0
        self._up_since = None
        self.failures += 1
        return full_jitter(self.failures - 1, base=self.base_s, cap=self.cap_s, rng=self._rng)
