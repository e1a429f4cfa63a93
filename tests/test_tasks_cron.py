"""Cron evaluation (server/tasks/cron.py): DST transitions, never-firing expressions, monotonicity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.tasks.cron import Cron, CronError, next_occurrence

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def _next(expression: str, local: datetime) -> datetime:
    """Next occurrence as an aware datetime in ``local``'s zone, through the epoch-seconds API."""
    assert local.tzinfo is not None
    after = next_occurrence(expression, local.timestamp(), str(local.tzinfo))
    return datetime.fromtimestamp(after, local.tzinfo)


def _utc(local: datetime) -> datetime:
    return local.astimezone(UTC)


# --- America/New_York, 2026: clocks jump 02:00 EST → 03:00 EDT on 8 March, fall back 02:00 EDT → 01:00 EST
# --- on 1 November (01:00-01:59 happens twice: fold=0 is the EDT pass, fold=1 the EST pass).


def test_fall_back_second_pass_every_15_minutes_goes_forward() -> None:
    """`*/15` at 01:10 of the repeated (EST) hour is 01:15 EST — the old parser answered 01:15 EDT, an hour earlier."""
    second_pass = datetime(2026, 11, 1, 1, 10, fold=1, tzinfo=NY)
    assert _utc(_next("*/15 * * * *", second_pass)) == _utc(second_pass) + timedelta(minutes=5)
    assert _next("*/15 * * * *", second_pass).utcoffset() == timedelta(hours=-5)


def test_fall_back_first_pass_runs_on_into_the_repeated_hour() -> None:
    """A wildcard-minute job keeps its 15-minute rhythm through both passes of 01:xx (EDT 01:45 → EST 01:00)."""
    first_pass_end = datetime(2026, 11, 1, 1, 50, fold=0, tzinfo=NY)
    following = _next("*/15 * * * *", first_pass_end)
    assert _utc(following) == _utc(first_pass_end) + timedelta(minutes=10)
    assert (following.hour, following.minute, following.utcoffset()) == (1, 0, timedelta(hours=-5))


def test_fall_back_fixed_time_fires_once() -> None:
    """`30 1 * * *` fires at 01:30 EDT, not again at 01:30 EST; from the second pass the next one is tomorrow."""
    before = datetime(2026, 11, 1, 0, 50, tzinfo=NY)
    fired = _next("30 1 * * *", before)
    assert _utc(fired) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    assert _next("30 1 * * *", fired) == datetime(2026, 11, 2, 1, 30, tzinfo=NY)
    second_pass = datetime(2026, 11, 1, 1, 10, fold=1, tzinfo=NY)
    assert _next("30 1 * * *", second_pass) == datetime(2026, 11, 2, 1, 30, tzinfo=NY)


def test_spring_forward_gap_time_fires_right_after_the_gap() -> None:
    """02:30 does not exist on 8 March: `30 2 * * *` fires at 03:00 EDT that day, then 02:30 the next."""
    before = datetime(2026, 3, 8, 1, 50, tzinfo=NY)
    fired = _next("30 2 * * *", before)
    assert _utc(fired) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT, 10 minutes after 01:50 EST
    assert _next("30 2 * * *", fired) == datetime(2026, 3, 9, 2, 30, tzinfo=NY)


def test_spring_forward_wildcard_minute_skips_the_missing_hour() -> None:
    """`*/15` after 01:45 EST is 03:00 EDT, fifteen real minutes later — no made-up 02:xx instants."""
    last_before_gap = datetime(2026, 3, 8, 1, 45, tzinfo=NY)
    following = _next("*/15 * * * *", last_before_gap)
    assert _utc(following) == _utc(last_before_gap) + timedelta(minutes=15)
    assert (following.hour, following.minute) == (3, 0)


def test_berlin_transitions() -> None:
    """Europe/Berlin 2026: 29 March 02:00 CET → 03:00 CEST, 25 October 03:00 CEST → 02:00 CET."""
    assert _next("30 2 * * *", datetime(2026, 3, 29, 1, 45, tzinfo=BERLIN)) == datetime(2026, 3, 29, 3, 0,
                                                                                      tzinfo=BERLIN)
    second_pass = datetime(2026, 10, 25, 2, 50, fold=1, tzinfo=BERLIN)  # CET
    following = _next("*/15 * * * *", second_pass)
    assert _utc(following) == _utc(second_pass) + timedelta(minutes=10)
    assert (following.hour, following.minute, following.utcoffset()) == (3, 0, timedelta(hours=1))
    assert _next("15 2 * * *", second_pass) == datetime(2026, 10, 26, 2, 15, tzinfo=BERLIN)


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "15 3 31 feb *", "0 0 */14 * 1#2"])
def test_expression_that_never_fires_is_rejected(expression: str) -> None:
    """An expression with no matching date is an error when parsed (and when evaluated), not a silent no-op."""
    with pytest.raises(CronError, match="never fires"):
        Cron.parse(expression)
    with pytest.raises(CronError):
        next_occurrence(expression, datetime(2026, 1, 1, tzinfo=UTC).timestamp(), "UTC")


@pytest.mark.parametrize(("expression", "message"), [
    ("* * * *", "5 fields"), ("0 * * * * *", "5 fields"), ("60 * * * *", "bad minute field '60'"),
    ("* 24 * * *", "bad hour field"), ("* * 0 * *", "bad day-of-month field"), ("* * * 13 *", "bad month field"),
    ("* * * * 8", "bad day-of-week field"), ("*/0 * * * *", "bad minute"), ("* 5-1 * * *", "bad hour"),
])
def test_malformed_expression_names_the_field(expression: str, message: str) -> None:
    """Syntax errors say which field is wrong (five fields only: no seconds field)."""
    with pytest.raises(CronError, match=message):
        Cron.parse(expression)


def test_leap_day_is_not_never() -> None:
    """`0 0 29 2 *` is rare but real: after 1 March 2026 it fires on 29 February 2028."""
    assert _next("0 0 29 2 *", datetime(2026, 3, 1, tzinfo=BERLIN)) == datetime(2028, 2, 29, tzinfo=BERLIN)


def test_naive_datetime_is_refused() -> None:
    """A wall time without a zone is ambiguous; the scheduler always passes aware datetimes."""
    with pytest.raises(ValueError, match="aware"):
        Cron.parse("* * * * *").next_after(datetime(2026, 1, 1))


_YEAR_START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
_YEAR_END = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
_ZONES = ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago", "UTC"]
_EXPRESSIONS = ["*/15 * * * *", "0 * * * *", "30 1 * * *", "30 2 * * *", "0 3 * * *", "*/7 1-3 * * *",
                "59 23 * * *", "0 0 * * *", "0 2 * * 0", "45 1 1 * *"]


@cache
def _transitions(zone: str) -> list[float]:
    """The instants in 2026 when ``zone``'s UTC offset changes (found hour by hour, then minute by minute)."""
    tz, found = ZoneInfo(zone), []
    for hour in range(int(_YEAR_START), int(_YEAR_END), 3600):
        if datetime.fromtimestamp(hour, tz).utcoffset() != datetime.fromtimestamp(hour + 3600, tz).utcoffset():
            found.extend(m for m in range(hour, hour + 3600, 60)
                         if datetime.fromtimestamp(m, tz).utcoffset() != datetime.fromtimestamp(m + 60, tz).utcoffset())
    return found


@st.composite
def _zone_and_instant(draw: st.DrawFn) -> tuple[str, float]:
    """Any instant of the year, or (half the time) one within three hours of one of the zone's DST changes."""
    zone = draw(st.sampled_from(_ZONES))
    transitions = _transitions(zone)
    if transitions and draw(st.booleans()):
        return zone, draw(st.sampled_from(transitions)) + draw(st.floats(min_value=-3 * 3600, max_value=3 * 3600))
    return zone, draw(st.floats(min_value=_YEAR_START, max_value=_YEAR_END))


@settings(max_examples=500, deadline=None)
@given(zone_instant=_zone_and_instant(), expression=st.sampled_from(_EXPRESSIONS))
def test_next_is_strictly_after_any_instant(zone_instant: tuple[str, float], expression: str) -> None:
    """For any instant of a year with DST transitions, next(t) > t, and the next after that is later still."""
    zone, instant = zone_instant
    following = next_occurrence(expression, instant, zone)
    assert following > instant
    assert next_occurrence(expression, following, zone) > following


@settings(max_examples=300, deadline=None)
@given(zone_instant=_zone_and_instant())
def test_quarter_hour_schedule_never_skips_or_repeats(zone_instant: tuple[str, float]) -> None:
    """`*/15` is at most 15 real minutes away and on a local quarter hour, DST or not."""
    zone, instant = zone_instant
    following = next_occurrence("*/15 * * * *", instant, zone)
    assert instant < following <= instant + 15 * 60
    assert datetime.fromtimestamp(following, ZoneInfo(zone)).minute % 15 == 0
