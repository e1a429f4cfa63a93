"""server.kpis.compute against hand-computed cases (pure: no server, no clock)."""

from __future__ import annotations

import pytest

from server.kpis import compute
from server.kpis.compute import Event, Request, Session, Survey

DAY = 86400.0
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC, a Tuesday


def req(rid: str, *events: tuple[float, str], sessions: tuple[Session, ...] = (), created: float = T0,
        survey: Survey | None = None, **kw: str) -> Request:
    return Request(id=rid, created_at=created, group=kw.pop("group", "g1"), events=tuple(
        Event(created + at, kind, actor) for at, kind, actor in ((e[0], e[1], "alice") for e in events)),
        sessions=sessions, survey=survey, **kw)


def test_mtta_connect_mttr_aht_of_one_request() -> None:
    """One request: claimed at 60 s, streaming 120–720 s, resolved at 900 s → AHT 600 + 180 wrap-up."""
    r = req("r1", (0, "created"), (60, "claimed"), (900, "resolved"),
            sessions=(Session("s1", T0 + 120, T0 + 720),), resolved_by="alice")
    assert compute.time_to_acknowledge(r) == 60
    assert compute.time_to_connect(r) == 120
    assert compute.time_to_resolve(r) == 900
    assert compute.handle_time(r) == 600 + 180


def test_wrap_up_is_capped_and_sessions_add_up() -> None:
    """Two sessions (100 s + 200 s) and a resolution 2 h after the last end: wrap-up counts 30 min."""
    r = req("r1", (0, "created"), (10, "claimed"), (10_000, "resolved"),
            sessions=(Session("a", T0 + 100, T0 + 200), Session("b", T0 + 2000, T0 + 2200)))
    assert compute.handle_time(r) == 300 + compute.WRAP_UP_CAP_S


def test_reopened_request_counts_its_final_resolution() -> None:
    """Resolved at 1 h, reopened, resolved again at 5 h: MTTR is 5 h; while reopened it is unresolved."""
    r = req("r1", (0, "created"), (3600, "resolved"), (7200, "reopened"), (18000, "resolved"))
    assert compute.time_to_resolve(r) == 18000
    open_again = req("r2", (0, "created"), (3600, "resolved"), (7200, "reopened"))
    assert open_again.resolved_at is None and compute.time_to_resolve(open_again) is None


@pytest.mark.parametrize(("reopen_day", "verdict"), [(6, False), (8, True)])
def test_fcr_reopened_on_day_6_fails_day_8_does_not(reopen_day: int, verdict: bool) -> None:
    """A reopen 6 days after the first resolution breaks FCR; one 8 days after does not."""
    r = req("r1", (0, "created"), (100, "resolved"), (100 + reopen_day * DAY, "reopened"),
            (100 + reopen_day * DAY + 50, "resolved"), sessions=(Session("s", T0 + 10, T0 + 90),))
    assert compute.first_contact(r, now=T0 + 30 * DAY) is verdict


def test_fcr_pending_escalated_and_two_sessions() -> None:
    """Younger than 7 days: pending (neither yes nor no); escalated or two sessions: no."""
    resolved = req("p", (0, "created"), (100, "resolved"))
    assert compute.first_contact(resolved, now=T0 + 100 + 6.9 * DAY) is None
    assert compute.fcr_pending(resolved, now=T0 + 100 + 6.9 * DAY)
    assert compute.first_contact(resolved, now=T0 + 100 + 7 * DAY) is True
    escalated = req("e", (0, "created"), (50, "escalated"), (100, "resolved"))
    assert compute.first_contact(escalated, now=T0 + 10 * DAY) is False
    two = req("t", (0, "created"), (100, "resolved"),
              sessions=(Session("a", T0 + 1, T0 + 2), Session("b", T0 + 3, T0 + 4)))
    assert compute.first_contact(two, now=T0 + 10 * DAY) is False
    unresolved = req("u", (0, "created"))
    assert compute.first_contact(unresolved, now=T0 + 10 * DAY) is None


def test_figures_means_medians_p90_and_csat() -> None:
    """Ten requests claimed after 10..100 s: mean 55, median 50, p90 90 (nearest rank); CSAT 3 of 4 answered."""
    rs = [req(f"r{i}", (0, "created"), (10 * i, "claimed"),
              survey=Survey(T0, T0 + 5 if i <= 3 else None, (5, 4, 2)[i - 1] if i <= 3 else None)
              if i <= 4 else None) for i in range(1, 11)]
    f = compute.figures(rs, now=T0 + DAY)
    assert (f.mtta.n, f.mtta.mean, f.mtta.median, f.mtta.p90) == (10, 55, 50, 90)
    assert f.surveys_asked == 4 and f.surveys_answered == 3
    assert f.response_rate == 0.75
    assert f.csat.mean == pytest.approx(11 / 3)
    assert f.csat_satisfied == pytest.approx(2 / 3)
    assert f.aht.n == 0 and f.aht.mean is None and f.fcr_rate is None


def test_buckets_by_technician_group_category_day_week() -> None:
    """Buckets key on resolver, group, category ('(none)' when empty) and UTC creation day / ISO-week Monday."""
    a = req("a", (0, "created"), (5, "resolved"), resolved_by="alice", category="printer", group="sales")
    b = req("b", (0, "created"), created=T0 + 2 * DAY, claimed_by="bob")
    rep = compute.report([a, b], by="technician", now=T0 + 3 * DAY)
    assert list(rep.buckets) == ["alice", "bob"] and rep.total.requests == 2
    assert compute.bucket_key(b, "category") == "(none)" and compute.bucket_key(a, "group") == "sales"
    assert compute.bucket_key(a, "day") == "2023-11-14" and compute.bucket_key(b, "day") == "2023-11-16"
    assert compute.bucket_key(a, "week") == "2023-11-13"
    with pytest.raises(ValueError):
        compute.bucket_key(a, "colour")


def test_period_is_by_creation_time() -> None:
    """[from, to) on created_at."""
    rs = [req(str(i), created=T0 + i * DAY) for i in range(5)]
    assert [r.id for r in compute.in_period(rs, T0 + DAY, T0 + 3 * DAY)] == ["1", "2"]
