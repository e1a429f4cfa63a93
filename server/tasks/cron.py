"""Five-field cron expressions (minute hour day-of-month month day-of-week), evaluated in a zone.

Supports ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists, month and day
names; day-of-week 0 or 7 is Sunday. As in classic cron, when both day fields are restricted
a day matches if either does. Occurrences are computed on the device's wall clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

_MONTHS = {m: i for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                        "dec"], start=1)}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}


class CronError(ValueError):
    """Not a valid five-field cron expression."""


def _value(token: str, names: dict[str, int], low: int, high: int) -> int:
    token = token.lower()
    if token in names:
        return names[token]
    if not token.isdigit():
        raise CronError(f"{token!r} is not a number")
    value = int(token)
    if not low <= value <= high:
        raise CronError(f"{value} is outside {low}-{high}")
    return value


def _field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int]:
    names = names or {}
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise CronError(f"bad step in {part!r}")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, b = base.split("-", 1)
            start, end = _value(a, names, low, high), _value(b, names, low, high)
            if start > end:
                raise CronError(f"range {base!r} runs backwards")
        else:
            start = _value(base, names, low, high)
            end = high if step else start
        values.update(range(start, end + 1, step or 1))
    if not values:
        raise CronError(f"field {text!r} matches nothing")
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_any: bool
    weekdays_any: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        fields = expression.split()
        if len(fields) != 5:
            raise CronError(f"{expression!r}: a cron expression has 5 fields (minute hour day month weekday)")
        weekdays = _field(fields[4], 0, 7, _DAYS)
        return cls(_field(fields[0], 0, 59), _field(fields[1], 0, 23), _field(fields[2], 1, 31),
                   _field(fields[3], 1, 12, _MONTHS), frozenset(d % 7 for d in weekdays),
                   fields[2] == "*", fields[4] == "*")

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        if self.days_any and self.weekdays_any:
            return True
        if self.days_any:
            return dow
        if self.weekdays_any:
            return dom
        return dom or dow

    def next_after(self, after: datetime) -> datetime:
        """First occurrence strictly after the aware datetime ``after``, in ``after``'s zone."""
        zone = after.tzinfo
        wall = after.replace(tzinfo=None, second=0, microsecond=0) + timedelta(minutes=1)
        day = wall.replace(hour=0, minute=0)
        for _ in range(366 * 8):
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        candidate = day.replace(hour=hour, minute=minute)
                        if candidate >= wall:
                            return candidate.replace(tzinfo=zone)
            day += timedelta(days=1)
        raise CronError("no occurrence within eight years")


def zone(name: str | None) -> ZoneInfo:
    """The device's zone by IANA name; UTC when unknown or invalid."""
    if name:
        try:
            return ZoneInfo(name)
        except (ValueError, KeyError, OSError) as exc:
            log.warning("unknown device timezone %r, using UTC: %s", name, exc)
    return ZoneInfo("UTC")


def next_occurrence(expression: str, after_ts: float, tz_name: str | None) -> float:
    """Epoch seconds of the next occurrence after ``after_ts`` on the device's wall clock."""
    local = datetime.fromtimestamp(after_ts, zone(tz_name))
    return Cron.parse(expression).next_after(local).timestamp()
