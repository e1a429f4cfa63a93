"""Log a repeating failure once per outage and once on recovery, never once per attempt.

A background task that retries a database write every few seconds during a 25 s outage would
otherwise write a traceback per attempt; the operator needs to know that it failed, why, and
when it worked again.
"""

from __future__ import annotations

import logging


def reason(exc: BaseException) -> str:
    """A one-line reason: the exception's type and message (the type alone when it has none)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class OutageLog:
    """Counts consecutive failures of one activity; logs the first and the recovery."""

    def __init__(self, logger: logging.Logger, activity: str) -> None:
        self._log = logger
        self.activity = activity
        #: Consecutive failures since the last success (0 while things work).
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.failures == 1:
            self._log.warning("%s failed (%s); retrying in the background", self.activity, reason(exc))

    def succeeded(self) -> None:
        if self.failures:
            self._log.warning("%s works again after %d failed attempt(s)", self.activity, self.failures)
        self.failures = 0
