"""Exponential backoff with full jitter (sleep = random(0, min(cap, base·2^attempt)))."""

from __future__ import annotations

import random
from collections.abc import Callable


def full_jitter(attempt: int, *, base: float = 1.0, cap: float = 60.0,
                rng: Callable[[], float] = random.random) -> float:
    return float(rng() * min(cap, base * (2 ** min(attempt, 32))))
