"""Viewer-driven flow control, adaptive quality and adaptive capture rate (sans-I/O).

Theory of operation
-------------------
The session asks :meth:`FlowControl.can_send` before capturing: at most
``max_in_flight`` updates and ``max_bytes_in_flight`` bytes may be un-acked (one update
is always allowed, however large). Within that the window follows the path: one more
update than the round trip of an update sent alone (its minimum over recent acks) holds of
the viewer's time per update (ack to ack), at least 2 — so a link with latency keeps frames
coming while acks are on their way (with a fixed 2 the frame rate was the ack round trip's),
while a viewer that is busy decoding gets no queue in front of it, hence no extra latency.
The byte bound keeps what a slow link holds queued at a quarter second of the byte budget.
Quality follows that per-update time and the byte rate, not the round trip: queueing behind
earlier updates is not a reason for worse pictures. While the viewer lags nothing is captured
at all, and when an ack arrives the *newest* screen is compared against what was
sent, so intermediate states are skipped, never queued. Where the display reports
damage the session captures when damage arrives and the window has room; only without
one does ``next_capture_at`` pace polling: soon after input or while the screen
changes, rarely when it is still. JPEG quality follows the measured ack round-trip and the byte rate.

Rules for this file: no I/O, no clocks — time comes in as ``now``.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Literal

QualityHint = Literal["auto", "low", "medium", "high"]

#: JPEG quality range per viewer hint.
QUALITY_RANGE: dict[str, tuple[int, int]] = {
    "auto": (20, 75),
    "low": (15, 40),
    "medium": (30, 65),
    "high": (60, 90),
}

#: Quality moves at most one step per this period.
QUALITY_PERIOD_S = 0.25


@dataclass
class FlowSettings:
    max_in_flight: int = 4
    #: Bytes un-acked at most (a quarter second of ``max_bytes_per_s``): bounds the queue,
    #: hence the latency, on a slow link whatever the frame size.
    max_bytes_in_flight: int = 500_000
    #: Capture interval right after input (typing latency) ...
    input_interval_s: float = 0.004
    #: ... for this long; most applications redraw within a few ms of the event.
    input_burst_s: float = 0.04
    #: After the burst, the active interval until this long after input.
    input_window_s: float = 0.25
    #: Capture interval while the screen keeps changing.
    active_interval_s: float = 0.012
    #: How long after the last change the screen counts as changing.
    active_window_s: float = 1.0
    #: Capture interval of a still screen.
    idle_interval_s: float = 0.15
    #: With a damage source: a full-frame consistency check this often (catches drawing a
    #: server did not report); nothing else runs on a timer.
    check_interval_s: float = 3.0
    #: Byte-rate budget for lossy updates; quality drops above it.
    max_bytes_per_s: float = 2_000_000.0
    #: Viewer time per update (ack to ack, or send to ack when the viewer was idle) above
    #: which quality drops.
    max_rtt_s: float = 0.25
    #: Acks over which the minimum round trip (the path's latency) is taken.
    rtt_samples: int = 16


class FlowControl:
    """In-flight window, ack bookkeeping, quality and capture pacing for one session."""

    def __init__(self, now: float, settings: FlowSettings | None = None) -> None:
        self.settings = settings or FlowSettings()
        self._in_flight: dict[int, tuple[float, int]] = {}
        self._bytes_in_flight = 0
        self._next_seq = 1
        self._last_capture = float("-inf")
        self._last_input = float("-inf")
        self._last_change = now
        self._blocked_since: float | None = None
        self._blocked_interval = self.settings.idle_interval_s
        self._sent_window: collections.deque[tuple[float, int]] = collections.deque()
        self._window_bytes = 0
        self._quality_changed = float("-inf")
        self.hint: QualityHint = "auto"
        self.quality = 60
        self.rtt_s = 0.0
        #: Smoothed viewer time per update: ack minus the later of its send and the previous ack.
        self.service_s = 0.0
        self._last_ack = float("-inf")
        self._rtts: collections.deque[float] = collections.deque(maxlen=self.settings.rtt_samples)
        self.max_in_flight_seen = 0
        self.skipped = 0
        self.acked = 0

    # --- outputs ------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def bytes_in_flight(self) -> int:
        return self._bytes_in_flight

    @property
    def window(self) -> int:
        """Updates allowed in flight now (see the module docstring)."""
        s = self.settings
        if not self._rtts or self.service_s <= 0:
            return s.max_in_flight
        wanted = 1 + math.ceil(min(self._rtts) / self.service_s - 1e-9)
        return max(min(2, s.max_in_flight), min(s.max_in_flight, wanted))

    def can_send(self) -> bool:
        if not self._in_flight:
            return True
        return len(self._in_flight) < self.window and self._bytes_in_flight < self.settings.max_bytes_in_flight

    def interval(self, now: float) -> float:
        s = self.settings
        since_input = now - self._last_input
        if since_input < s.input_burst_s:
            return s.input_interval_s
        if since_input < s.input_window_s or now - self._last_change < s.active_window_s:
            return s.active_interval_s
        return s.idle_interval_s

    def next_capture_at(self, now: float) -> float | None:
        """When to capture next; None while the in-flight window is full (wait for an ack)."""
        if not self.can_send():
            if self._blocked_since is None:
                self._blocked_since = now
                self._blocked_interval = self.interval(now)
            return None
        return self._last_capture + self.interval(now)

    def byte_rate(self, now: float) -> float:
        self._expire(now)
        return self._window_bytes / 1.0

    # --- inputs -------------------------------------------------------------------------

    def on_input(self, now: float) -> None:
        self._last_input = now

    def on_captured(self, now: float, changed: bool) -> None:
        self._last_capture = now
        if changed:
            self._last_change = now

    @property
    def next_seq(self) -> int:
        """Sequence number for the next update (taken by :meth:`on_sent`)."""
        return self._next_seq

    def on_sent(self, seq: int, nbytes: int, now: float) -> None:
        previous = self._in_flight.pop(seq, None)
        if previous is not None:  # a wrapped sequence number still in flight: forget the old one
            self._bytes_in_flight -= previous[1]
        self._in_flight[seq] = (now, nbytes)
        self._bytes_in_flight += nbytes
        self._next_seq = 1 if seq >= 2**32 - 1 else seq + 1
        self.max_in_flight_seen = max(self.max_in_flight_seen, len(self._in_flight))
        self._sent_window.append((now, nbytes))
        self._window_bytes += nbytes

    def on_ack(self, seq: int, now: float) -> bool:
        """Record an ack; False when ``seq`` is not in flight (stale or bogus).

        Acks are cumulative: the tunnel is ordered, so a viewer that drew ``seq`` drew every
        update sent before it, and an ack lost or folded on the way does not hold the window.
        """
        entry = self._in_flight.get(seq)
        if entry is None:
            return False
        for earlier in list(self._in_flight):  # in send order
            self._bytes_in_flight -= self._in_flight.pop(earlier)[1]
            if earlier == seq:
                break
        self.acked += 1
        sent_at, _ = entry
        rtt = now - sent_at
        self.rtt_s = rtt if self.acked == 1 else 0.8 * self.rtt_s + 0.2 * rtt
        service = now - max(sent_at, self._last_ack)
        self.service_s = service if self.acked == 1 else 0.8 * self.service_s + 0.2 * service
        self._last_ack = now
        self._rtts.append(rtt)
        if self._blocked_since is not None:
            waited = now - self._blocked_since
            self.skipped += int(waited / self._blocked_interval)
            self._blocked_since = None
        self._adapt_quality(now)
        return True

    def set_hint(self, hint: QualityHint) -> None:
        self.hint = hint
        low, high = QUALITY_RANGE[hint]
        self.quality = min(max(self.quality, low), high)

    # --- internals ----------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        while self._sent_window and now - self._sent_window[0][0] > 1.0:
            _, nbytes = self._sent_window.popleft()
            self._window_bytes -= nbytes

    def _adapt_quality(self, now: float) -> None:
        # One step per period: the byte rate needs time to reflect the last change.
        if now - self._quality_changed < QUALITY_PERIOD_S:
            return
        quality = self.quality
        low, high = QUALITY_RANGE[self.hint]
        rate = self.byte_rate(now)
        budget = self.settings.max_bytes_per_s
        if self.service_s > self.settings.max_rtt_s or rate > budget:
            self.quality = max(low, self.quality - 5)
        elif self.service_s < self.settings.max_rtt_s / 3 and rate < 0.8 * budget:
            self.quality = min(high, self.quality + 2)
        if self.quality != quality:
            self._quality_changed = now
