"""Log repeated events as counts: one line per interval, never one line per event.

Out of file descriptors, asyncio's accept path once wrote 544,275 identical tracebacks (276 MB)
in about a minute, burying everything else. A :class:`CountingLog` writes the first event of a
burst at once (the start of a problem shows when it happens), then one line per ``interval_s``
with how many of each kind happened and the last detail, and falls silent when an interval passes
without any. Needs a running event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any


class CountingLog:
    """Counts events by kind; logs ``message`` with the counts at most once per ``interval_s``."""

    def __init__(self, logger: logging.Logger, message: str, *, interval_s: float = 10.0,
                 level: int = logging.WARNING, fields: dict[str, Any] | None = None) -> None:
        self._logger = logger
        self._message = message
        self._interval_s = interval_s
        self._level = level
        self._fields = fields or {}
        self._counts: Counter[str] = Counter()
        self._last = ""
        self._timer: asyncio.TimerHandle | None = None
        self.total: Counter[str] = Counter()  # since start, for tests and figures

    def note(self, kind: str, detail: str = "") -> None:
        """One event of ``kind`` (``detail``: what the last one said, e.g. the error)."""
        self.total[kind] += 1
        if detail:
            self._last = detail
        if self._timer is None:  # quiet until now: say it at once
            self._emit(Counter({kind: 1}), first=True)
            self._timer = asyncio.get_running_loop().call_later(self._interval_s, self._flush)
        else:
            self._counts[kind] += 1

    def close(self) -> None:
        """Write what is still counted and stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counts:
            self._emit(self._counts)
            self._counts = Counter()

    def _flush(self) -> None:
        if not self._counts:
            self._timer = None
            return
        self._emit(self._counts)
        self._counts = Counter()
        self._timer = asyncio.get_running_loop().call_later(self._interval_s, self._flush)

    def _emit(self, counts: Counter[str], *, first: bool = False) -> None:
        span = "first of a burst; further ones are counted" if first else f"in the last {self._interval_s:g} s"
        extra: dict[str, Any] = {**self._fields, **dict(counts), "period": span}
        if self._last:
            extra["last"] = self._last
        self._logger.log(self._level, self._message, extra=extra)
