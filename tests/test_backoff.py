"""The reconnect backoff state machine (agent/backoff.py), without a network or a clock."""

from __future__ import annotations

import pytest

from agent.backoff import Backoff, full_jitter


def top() -> float:
    """A random source at the top of its range, so delays show their bound."""
    return 1.0


def test_failures_in_a_row_double_the_window_up_to_the_cap() -> None:
    """The n-th failure in a row waits at most base·2^(n-1), never more than the cap."""
    backoff = Backoff(base_s=1.0, cap_s=60.0, reset_after_s=60.0, rng=top)
    delays = [backoff.next_delay(now=float(t)) for t in range(9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert backoff.failures == 9


def test_a_connection_that_stayed_up_resets_the_count() -> None:
    """After many failures, a connection up for reset_after_s makes the next retry wait at most base."""
    backoff = Backoff(base_s=1.0, cap_s=60.0, reset_after_s=60.0, rng=top)
    for t in range(40):
        backoff.next_delay(now=float(t))
    assert backoff.next_delay(now=100.0) == 60.0
    backoff.connected(now=1000.0)
    assert backoff.next_delay(now=1060.0) == 1.0  # up exactly reset_after_s
    assert backoff.failures == 1
    assert backoff.next_delay(now=1061.0) == 2.0  # the server is still down: the window grows again


def test_a_short_connection_keeps_the_count() -> None:
    """A connection that drops before reset_after_s (a flapping server, a storm) does not reset."""
    backoff = Backoff(base_s=1.0, cap_s=60.0, reset_after_s=60.0, rng=top)
    for t in range(5):
        backoff.next_delay(now=float(t))
    backoff.connected(now=10.0)
    assert backoff.next_delay(now=69.9) == 32.0
    assert backoff.failures == 6


def test_a_connection_counts_once() -> None:
    """The reset needs a new connection: a failed attempt after a reset does not reset again."""
    backoff = Backoff(base_s=0.5, cap_s=10.0, reset_after_s=5.0, rng=top)
    backoff.connected(now=0.0)
    assert backoff.next_delay(now=100.0) == 0.5
    assert backoff.next_delay(now=200.0) == 1.0
    assert backoff.next_delay(now=300.0) == 2.0


def test_delays_are_jittered_over_the_whole_window() -> None:
    """Full jitter: the delay is the random fraction of the window (0 is possible, spreading a storm)."""
    fractions = iter([0.0, 0.25, 0.5])
    backoff = Backoff(base_s=2.0, cap_s=60.0, rng=lambda: next(fractions))
    assert [backoff.next_delay(now=0.0) for _ in range(3)] == [0.0, 1.0, 4.0]


def test_full_jitter_bounds() -> None:
    """full_jitter never exceeds the cap, even for huge attempt counts, and clamps negative ones."""
    assert full_jitter(10_000, base=1.0, cap=60.0, rng=top) == 60.0
    assert full_jitter(-3, base=1.0, cap=60.0, rng=top) == 1.0


@pytest.mark.parametrize(("base", "cap", "reset"), [(0.0, 60.0, 60.0), (1.0, -1.0, 60.0), (1.0, 60.0, -1.0)])
def test_nonsense_settings_are_refused(base: float, cap: float, reset: float) -> None:
    """A zero base or negative settings would make a reconnect loop spin: refused at construction."""
    with pytest.raises(ValueError):
        Backoff(base_s=base, cap_s=cap, reset_after_s=reset)
