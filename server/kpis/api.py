"""``GET /api/v1/kpis`` and ``/api/v1/kpis.csv``: the support desk's numbers over a period, for the
groups the caller may see (view_inventory), optionally broken down by technician, group,
category, day or week."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from server import api
from server.auth.rights import Right

from . import compute, source, surveys
from .compute import Figures, Report

#: Without ``from``: the last 30 days.
DEFAULT_PERIOD_S = 30 * 86400.0
Epoch = Annotated[float, msgspec.Meta(ge=0, le=4_102_444_800)]  # up to 2100-01-01


class KpiQuery(msgspec.Struct, frozen=True):
    start: Annotated[Epoch | None, msgspec.Meta(description="Requests created from (epoch s, inclusive); "
                                                            "default `to` − 30 days.")] = msgspec.field(
        default=None, name="from")
    end: Annotated[Epoch | None, msgspec.Meta(description="… until (epoch s, exclusive); default now.")] = \
        msgspec.field(default=None, name="to")
    by: Annotated[Literal["technician", "group", "category", "day", "week"] | None,
                  msgspec.Meta(description="Break the figures down by this.")] = None
    as_of: Annotated[Epoch | None, msgspec.Meta(description="The 'now' of the FCR rule (a first resolution "
                                                            "younger than 7 days before it is pending); "
                                                            "default now.")] = None


class Bucket(msgspec.Struct, frozen=True):
    key: str
    figures: Figures


class KpiReport(msgspec.Struct, frozen=True):
    start: float = msgspec.field(name="from")
    end: float = msgspec.field(name="to")
    as_of: float
    by: str | None
    total: Figures
    buckets: list[Bucket]


class SurveyComment(msgspec.Struct, frozen=True):
    request_id: str
    number: int
    summary: str
    group_name: str
    technician: str
    score: int
    comment: str
    answered_at: float


class CommentList(msgspec.Struct, frozen=True):
    start: float = msgspec.field(name="from")
    end: float = msgspec.field(name="to")
    comments: list[SurveyComment] = []


def _period(q: KpiQuery) -> tuple[float, float]:
    end = q.end if q.end is not None else time.time()
    start = q.start if q.start is not None else end - DEFAULT_PERIOD_S
    if start >= end:
        raise api.ApiError(400, "bad_period", "`from` must be before `to`")
    return start, end


async def survey_comments(request: web.Request) -> web.Response:
    """What the people wrote in their surveys, newest first"""
    start, end = _period(api.query(request, KpiQuery))
    groups = api.principal(request).groups_with(Right.VIEW_INVENTORY)
    rows = await surveys.comments(api.db(request), start=start, end=end, groups=groups)
    return api.json(CommentList(start, end, [SurveyComment(
        request_id=r["request_id"], number=int(r["number"]), summary=r["summary"], group_name=r["group_name"],
        technician=r["technician"], score=int(r["score"]), comment=r["comment"], answered_at=float(r["answered_at"]))
        for r in rows]))


async def _report(request: web.Request) -> tuple[KpiQuery, float, float, float, Report]:
    q = api.query(request, KpiQuery)
    now = time.time()
    start, end = _period(q)
    groups = api.principal(request).groups_with(Right.VIEW_INVENTORY)
    try:
        records = await source.load(api.db(request), start=start, end=end, groups=groups)
    except source.TooMany as exc:
        raise api.ApiError(400, "too_many", str(exc)) from exc
    as_of = q.as_of if q.as_of is not None else now
    return q, start, end, as_of, compute.report(records, by=q.by, now=as_of)


async def kpis(request: web.Request) -> web.Response:
    """The support desk's numbers"""
    q, start, end, as_of, report = await _report(request)
    return api.json(KpiReport(start, end, as_of, q.by, report.total,
                              [Bucket(k, f) for k, f in report.buckets.items()]))


def _stat_columns(name: str) -> list[tuple[str, Callable[[Figures], Any]]]:
    def pick(part: str) -> Callable[[Figures], Any]:
        return lambda f: getattr(getattr(f, name), part)
    return [(f"{name}_{part}", pick(part)) for part in ("n", "mean", "median", "p90")]


#: The CSV's columns after ``bucket``: durations in seconds, rates as fractions of 1.
CSV_COLUMNS: list[tuple[str, Callable[[Figures], Any]]] = [
    ("requests", lambda f: f.requests), ("resolved", lambda f: f.resolved),
    *_stat_columns("mtta"), *_stat_columns("time_to_connect"), *_stat_columns("aht"), *_stat_columns("mttr"),
    ("fcr_rate", lambda f: f.fcr_rate), ("fcr_yes", lambda f: f.fcr_yes), ("fcr_no", lambda f: f.fcr_no),
    ("fcr_pending", lambda f: f.fcr_pending), *_stat_columns("csat"),
    ("csat_satisfied", lambda f: f.csat_satisfied), ("surveys_asked", lambda f: f.surveys_asked),
    ("surveys_answered", lambda f: f.surveys_answered), ("response_rate", lambda f: f.response_rate),
]
TOTAL_ROW = "(all)"


def _cell(value: Any) -> str:
    """Text a spreadsheet will not run as a formula (bucket keys are technicians' and categories' names)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(round(value, 6))
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(report: Report) -> str:
    """One row for the whole period (``(all)``), then one per bucket."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["bucket", *(name for name, _ in CSV_COLUMNS)])

    def rows() -> Iterator[tuple[str, Figures]]:
        yield TOTAL_ROW, report.total
        yield from report.buckets.items()

    for key, figures in rows():
        writer.writerow([_cell(key), *(_cell(get(figures)) for _, get in CSV_COLUMNS)])
    return out.getvalue()


async def kpis_csv(request: web.Request) -> web.Response:
    """The support desk's numbers as CSV"""
    _q, _start, _end, _as_of, report = await _report(request)
    return web.Response(text=to_csv(report), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="kpis.csv"'})


_SEE = ("Only requests of the groups where the caller holds view_inventory. Definitions: README, "
        "\"The support desk's numbers (KPIs)\".")

ROUTES: list[api.Route] = [
    api.Route("GET", "/api/v1/kpis", kpis, Right.VIEW_INVENTORY, query=KpiQuery, response=KpiReport,
              description=_SEE),
    api.Route("GET", "/api/v1/kpis.csv", kpis_csv, Right.VIEW_INVENTORY, query=KpiQuery,
              content={"text/csv": {"schema": {"type": "string"}}},
              description=_SEE + " Durations in seconds, rates as fractions of 1; the first row is the whole period."),
    api.Route("GET", "/api/v1/kpis/comments", survey_comments, Right.VIEW_INVENTORY, query=KpiQuery,
              response=CommentList, description="Answered surveys with a comment (at most "
              f"{surveys.MAX_COMMENTS}, newest first) of requests created in the period. " + _SEE),
]
