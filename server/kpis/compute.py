"""The support desk's numbers, computed from typed records — no database, no clock, no I/O.

Inputs are plain records read elsewhere (:mod:`server.kpis.source`): each support request with
its event log, the sessions started from it, its survey. ``now`` is passed in, so the FCR
"pending" window is testable without waiting a week. Every definition below is the one the
README states (section "The support desk's numbers (KPIs)"); change both together.

Durations are seconds. A figure with no sample is ``None`` (never 0: "no data" is not "instant").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

#: FCR looks this far past the first resolution for a reopen or an escalation.
FCR_WINDOW_S = 7 * 86400.0
#: Wrap-up (documentation after the session) counted into AHT is capped here: a request left
#: resolved-pending overnight is not an hour of handling.
WRAP_UP_CAP_S = 30 * 60.0
#: Buckets a report may be broken down by.
DIMENSIONS = ("technician", "group", "category", "day", "week")
NONE_LABEL = "(none)"


@dataclass(frozen=True)
class Event:
    """One entry of a request's event log (``support_request_events``)."""

    at: float
    kind: str
    actor: str = ""


@dataclass(frozen=True)
class Session:
    """A remote session started from a request: streaming from ``started_at`` to ``ended_at``."""

    id: str
    started_at: float | None
    ended_at: float | None
    technician: str = ""


@dataclass(frozen=True)
class Survey:
    asked_at: float
    answered_at: float | None = None
    score: int | None = None
    technician: str = ""


@dataclass(frozen=True)
class Request:
    id: str
    created_at: float
    group: str
    category: str = ""
    claimed_by: str = ""
    resolved_by: str = ""
    events: tuple[Event, ...] = ()
    sessions: tuple[Session, ...] = ()
    survey: Survey | None = None

    def first(self, kind: str) -> Event | None:
        return next((e for e in sorted(self.events, key=lambda e: e.at) if e.kind == kind), None)

    def last(self, kind: str) -> Event | None:
        return next((e for e in sorted(self.events, key=lambda e: -e.at) if e.kind == kind), None)

    @property
    def resolved_at(self) -> float | None:
        """The final resolution: the last 'resolved' event, unless a 'reopened' came after it."""
        resolved = self.last("resolved")
        reopened = self.last("reopened")
        if resolved is None or (reopened is not None and reopened.at > resolved.at):
            return None
        return resolved.at

    @property
    def technician(self) -> str:
        """Who the request is counted for: who resolved it, else who holds it, else the last claimer."""
        if self.resolved_by:
            return self.resolved_by
        if self.claimed_by:
            return self.claimed_by
        claimed = self.last("claimed")
        return claimed.actor if claimed is not None else ""


@dataclass(frozen=True)
class Stat:
    """Mean, median and p90 of one duration (or score) over ``n`` samples."""

    n: int
    mean: float | None
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            return cls(0, None, None, None)
        ordered = sorted(values)
        return cls(len(ordered), sum(ordered) / len(ordered), percentile(ordered, 50), percentile(ordered, 90))


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least p % of samples at or below it."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Figures:
    """Every KPI over one set of requests."""

    requests: int
    resolved: int
    mtta: Stat
    time_to_connect: Stat
    aht: Stat
    mttr: Stat
    fcr_rate: float | None
    fcr_yes: int
    fcr_no: int
    fcr_pending: int
    csat: Stat
    csat_satisfied: float | None  #: share of answers scoring 4 or 5
    surveys_asked: int
    surveys_answered: int
    response_rate: float | None


# --- per request -------------------------------------------------------------------------------


def time_to_acknowledge(r: Request) -> float | None:
    """MTTA sample: created → the first 'claimed' event."""
    claimed = r.first("claimed")
    return None if claimed is None else max(0.0, claimed.at - r.created_at)


def time_to_connect(r: Request) -> float | None:
    """Created → the earliest streaming start among its sessions."""
    starts = [s.started_at for s in r.sessions if s.started_at is not None]
    return None if not starts else max(0.0, min(starts) - r.created_at)


def handle_time(r: Request) -> float | None:
    """AHT sample of a finally resolved request with at least one ended session: the sum of its
    sessions' streaming durations plus wrap-up = final resolution − the last session end before
    it, capped at :data:`WRAP_UP_CAP_S` (0 when the resolution came before the end)."""
    resolved_at = r.resolved_at
    ended = [(s.started_at, s.ended_at) for s in r.sessions if s.started_at is not None and s.ended_at is not None]
    if resolved_at is None or not ended:
        return None
    talk = sum(max(0.0, end - start) for start, end in ended)
    ends = [end for _, end in ended if end <= resolved_at]
    wrap = min(WRAP_UP_CAP_S, resolved_at - max(ends)) if ends else 0.0
    return talk + wrap


def time_to_resolve(r: Request) -> float | None:
    """MTTR sample: created → the final resolution (a reopened request counts its whole life)."""
    resolved_at = r.resolved_at
    return None if resolved_at is None else max(0.0, resolved_at - r.created_at)


def first_contact(r: Request, now: float) -> bool | None:
    """FCR verdict: None = not counted (never resolved, or its first resolution is younger than
    :data:`FCR_WINDOW_S`: 'pending'); True = at most one session, no 'escalated' event before
    first resolution + 7 days and no 'reopened' event within 7 days of the first resolution."""
    first = r.first("resolved")
    if first is None or now - first.at < FCR_WINDOW_S:
        return None
    horizon = first.at + FCR_WINDOW_S
    if len(r.sessions) > 1:
        return False
    return not any(e.kind in ("reopened", "escalated") and e.at <= horizon for e in r.events)


def fcr_pending(r: Request, now: float) -> bool:
    first = r.first("resolved")
    return first is not None and now - first.at < FCR_WINDOW_S


# --- over a set --------------------------------------------------------------------------------


def _values(requests: Iterable[Request], sample: Callable[[Request], float | None]) -> list[float]:
    return [v for v in (sample(r) for r in requests) if v is not None]


def figures(requests: Sequence[Request], now: float) -> Figures:
    """Every KPI over ``requests`` (the caller picks the period and the bucket)."""
    verdicts = [first_contact(r, now) for r in requests]
    yes, no = verdicts.count(True), verdicts.count(False)
    surveys = [r.survey for r in requests if r.survey is not None]
    scores = [float(s.score) for s in surveys if s.answered_at is not None and s.score is not None]
    return Figures(
        requests=len(requests),
        resolved=sum(1 for r in requests if r.resolved_at is not None),
        mtta=Stat.of(_values(requests, time_to_acknowledge)),
        time_to_connect=Stat.of(_values(requests, time_to_connect)),
        aht=Stat.of(_values(requests, handle_time)),
        mttr=Stat.of(_values(requests, time_to_resolve)),
        fcr_rate=yes / (yes + no) if yes + no else None,
        fcr_yes=yes,
        fcr_no=no,
        fcr_pending=sum(1 for r in requests if fcr_pending(r, now)),
        csat=Stat.of(scores),
        csat_satisfied=sum(1 for s in scores if s >= 4) / len(scores) if scores else None,
        surveys_asked=len(surveys),
        surveys_answered=len(scores),
        response_rate=len(scores) / len(surveys) if surveys else None,
    )


def day_of(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def week_of(at: float) -> str:
    """The Monday (UTC) starting the ISO week of ``at``."""
    day = datetime.fromtimestamp(at, UTC).date()
    return (day - timedelta(days=day.weekday())).isoformat()


def bucket_key(r: Request, by: str) -> str:
    """Which bucket a request falls in: its technician, group, category, or creation day/week (UTC)."""
    if by == "technician":
        return r.technician or NONE_LABEL
    if by == "group":
        return r.group or NONE_LABEL
    if by == "category":
        return r.category or NONE_LABEL
    if by == "day":
        return day_of(r.created_at)
    if by == "week":
        return week_of(r.created_at)
    raise ValueError(f"unknown breakdown {by!r}; one of {', '.join(DIMENSIONS)}")


@dataclass(frozen=True)
class Report:
    total: Figures
    by: str | None = None
    buckets: dict[str, Figures] = field(default_factory=dict)


def in_period(requests: Iterable[Request], start: float | None, end: float | None) -> list[Request]:
    """The requests created in [start, end)."""
    return [r for r in requests if (start is None or r.created_at >= start) and (end is None or r.created_at < end)]


def report(requests: Sequence[Request], *, now: float, by: str | None = None) -> Report:
    """Figures over all ``requests`` and, with ``by``, per bucket (sorted by key)."""
    buckets: dict[str, list[Request]] = {}
    if by is not None:
        for r in requests:
            buckets.setdefault(bucket_key(r, by), []).append(r)
    return Report(figures(requests, now), by, {k: figures(v, now) for k, v in sorted(buckets.items())})
