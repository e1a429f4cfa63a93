"""Five-field cron expressions (minute hour day-of-month month day-of-week), evaluated in a zone.

Parsing and evaluation are cronsim's (the parser healthchecks.io uses, which mimics Debian
cron); this module only fixes the contract the scheduler relies on:

- five fields only (cronsim would also take a leading seconds field);
- an expression that can never fire (``0 0 30 2 *``) is rejected when parsed, not discovered
  by the scheduler every tick;
- the next occurrence is an *instant* strictly after the given instant. cronsim works on the
  device's wall clock and, for fixed-time jobs, follows Debian cron on DST days: a time in the
  spring-forward gap (02:30 on the day clocks jump 02:00 → 03:00) fires at the first instant
  after the gap, and a time in the repeated autumn hour fires once, in its first pass. A
  wall-clock result can therefore lie before the input when the input is in the second pass of
  that hour; such results are skipped here, so a caller never goes backwards in time.

Syntax: ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists, month and day
names; day-of-week 0 or 7 is Sunday; cronsim's ``L``, ``LW`` and ``weekday#n`` also work.
When both day fields are restricted and neither starts with ``*``, a day matches if either
does (classic cron).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError
from cronsim.cronsim import Field

log = logging.getLogger(__name__)

#: An instant from which every valid expression is probed once when parsed. cronsim looks up to
#: 50 years ahead; 50 years from 2000 cover every (leap year, weekday of 1 January) combination.
_PROBE_FROM = datetime(2000, 1, 1, tzinfo=UTC)
#: Wall-clock results before the input are skipped; at most one per repeated hour, so a
#: handful of retries is plenty — more means a bug, reported as an error rather than a hang.
_MAX_SKIPS = 16


class CronError(ValueError):
    """Not a valid five-field cron expression, or one that never fires."""


@dataclass(frozen=True)
class Cron:
    """A validated expression; :meth:`next_after` gives its occurrences."""

    expression: str

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """Check syntax and that the expression fires at all; raises :class:`CronError`."""
        fields = expression.split()
        if len(fields) != 5:
            raise CronError(f"{expression!r}: a cron expression has 5 fields (minute hour day month weekday)")
        cron = cls(" ".join(fields))
        try:
            next(cron._iterate(_PROBE_FROM))
        except StopIteration:
            raise CronError(f"{expression!r} never fires (no matching date in 50 years)") from None
        return cron

    def _iterate(self, start: datetime) -> CronSim:
        try:
            return CronSim(self.expression, start)
        except CronSimError as exc:
            raise CronError(f"{self.expression!r}: {_explain(self.expression)}") from exc

    def next_after(self, after: datetime) -> datetime:
        """First occurrence strictly after the aware datetime ``after``, in ``after``'s zone."""
        if after.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        occurrences = self._iterate(after)
        for _ in range(_MAX_SKIPS):
            try:
                candidate = next(occurrences)
            except StopIteration:
                raise CronError(f"{self.expression!r}: no occurrence within 50 years of {after}") from None
            if candidate.timestamp() > after.timestamp():
                return candidate
        raise CronError(f"{self.expression!r}: no occurrence after {after} (evaluation kept going backwards)")


_FIELDS = {Field.MINUTE: "minute", Field.HOUR: "hour", Field.DAY: "day-of-month", Field.MONTH: "month",
           Field.DOW: "day-of-week"}


def _explain(expression: str) -> str:
    """Which field cronsim refused; if each field alone is fine, the day can never come."""
    for (kind, name), text in zip(_FIELDS.items(), expression.upper().split(), strict=True):
        try:
            kind.parse(text)
        except CronSimError:
            return f"bad {name} field {text.lower()!r}"
    return "never fires: no month it names has that day of the month"


def zone(name: str | None) -> ZoneInfo:
    """The device's zone by IANA name; UTC when unknown or invalid."""
    if name:
        try:
            return ZoneInfo(name)
        except (ValueError, KeyError, OSError) as exc:
            log.warning("unknown device timezone %r, using UTC: %s", name, exc)
    return ZoneInfo("UTC")


def next_occurrence(expression: str, after_ts: float, tz_name: str | None) -> float:
    """Epoch seconds of the next occurrence strictly after ``after_ts`` on the device's wall clock."""
    # Occurrences fall on whole seconds, so the next one after floor(t) is the next one after t;
    # flooring here avoids fromtimestamp rounding 59.9999998 s up to the occurrence itself.
    local = datetime.fromtimestamp(math.floor(after_ts), zone(tz_name))
    return _parsed(expression).next_after(local).timestamp()


@lru_cache(maxsize=256)
def _parsed(expression: str) -> Cron:
    """The scheduler evaluates the same few stored expressions every tick: parse (and probe) once."""
    return Cron.parse(expression)
