"""Issue 19's key test: a history of 56 support requests built through the real flows, every KPI
computed here independently (not with server/kpis/compute.py) and compared with the API, the CSV,
the metrics endpoint and the console dashboard in Chromium.

The history: two enrolled devices (real agents, real mTLS) open requests with ``request.open``;
technicians claim, start real remote sessions from them (scripted consent, Xvfb screen: the
session streams when the agent's tunnel attaches), end them, escalate, resolve, reopen and
resolve again; the device answers the CSAT survey or not. The server stamps every event with its
own clock, so the "known timestamps" are read back from the API afterwards (each request's event
log, each session's start and end) and the expected figures are computed from those.
The FCR window (7 days) is checked without waiting a week through the report's ``as_of``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from agent.consent.scripted import ScriptedConsentUI
from agent.control_client import AgentClient
from agent.help.survey import SurveyDesk, attach
from certs import tls
from protocol.requests import RequestOpen, RequestStatus
from protocol.surveys import SurveyAsk
from server.app import HelplineServer
from server.config import MetricsConfig
from server.kpis import metrics as kpi_metrics
from server.kpis.feature import COLLECTOR
from tests.harness import RunningAgent, console_url, enroll_agent, running_agent, running_server, wait_until
from tests.test_accounts_support import make_user
from tests.test_console_support import console_browser
from tests.test_session_helpers import api, configure_agent, install_test_auth
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

N = 56
DAY = 86400.0
CATEGORIES = ("printer", "network", "access", "email")
TOKEN = "kpi-scrape-secret"


@dataclass(frozen=True)
class Plan:
    """What happens to request ``i`` (deterministic, so a failure can be replayed)."""

    i: int
    device: str          # "a" (group default, sessions possible) or "b" (group other)
    technician: str      # who claims and resolves ("" = nobody claims)
    sessions: int        # real remote sessions started from it (device a only)
    escalate: bool
    resolve: bool
    reopen: bool         # reopened after the resolution, then resolved again
    category: str
    answer: tuple[int, str] | None  # the survey answer, None = not answered

    @property
    def summary(self) -> str:
        return f"kpi request {self.i}"


def plans() -> list[Plan]:
    out = []
    for i in range(N):
        device = "b" if i % 5 == 4 else "a"
        never_claimed = i % 11 == 10 and i % 2 == 0
        technician = "" if never_claimed else ("ann" if i % 3 else "eve")
        resolve = i % 11 != 10
        sessions = 0
        if device == "a" and technician and i % 4 == 1:
            sessions = 2 if i % 24 == 5 else 1
        out.append(Plan(i, device, technician, sessions, escalate=i % 9 == 4, resolve=resolve,
                        reopen=resolve and i % 7 == 2, category=CATEGORIES[i % 4] if resolve else "",
                        answer=None if not resolve or i % 3 == 0 else (1 + (i * 7) % 5, f"comment {i}")))
    return out


# --- the device side --------------------------------------------------------------------------


class Device:
    """A real agent plus what its control channel was told: request ids by local id, survey asks."""

    def __init__(self, agent: RunningAgent, answers: dict[str, tuple[int, str] | None]) -> None:
        self.agent = agent
        self.request_ids: dict[str, str] = {}
        self.asks: list[SurveyAsk] = []
        self.answers = answers

        async def on_status(_client: AgentClient, status: RequestStatus) -> None:
            self.request_ids[status.local_id] = status.request_id

        async def shower(ask: SurveyAsk) -> tuple[int, str] | None:
            """The person at the device: answers as planned (the window itself: test_kpis_survey_window)."""
            self.asks.append(ask)
            return self.answers[ask.summary]

        agent.client.register(RequestStatus, on_status)
        attach(SurveyDesk(agent.client, shower))

    async def open(self, summary: str) -> str:
        local_id = uuid.uuid4().hex
        await self.agent.client.send(RequestOpen(local_id=local_id, summary=summary, requester="tester"))
        await wait_until(lambda: local_id in self.request_ids, timeout=30, what=f"request.status for {summary}")
        return self.request_ids[local_id]


# --- the technician side ----------------------------------------------------------------------


async def call(server: HelplineServer, method: str, path: str, user: str, body: Any = None) -> Any:
    status, answer = await api(server, method, path, user, body)
    assert status in (200, 201), (method, path, status, answer)
    return answer


async def session_from(server: HelplineServer, device_id: str, request_id: str, user: str) -> str:
    """A real session started from the request: streams once the agent's tunnel attaches, then ended."""
    created = await call(server, "POST", f"/api/v1/devices/{device_id}/sessions", user,
                         {"mode": "view", "request_id": request_id})
    sid = str(created["session_id"])

    async def streaming() -> bool:
        return (await call(server, "GET", f"/api/v1/sessions/{sid}", user))["started_at"] is not None

    await wait_until(streaming, timeout=60, interval=0.1, what=f"session {sid} streaming")
    await call(server, "POST", f"/api/v1/sessions/{sid}/end", user)

    async def ended() -> bool:
        return (await call(server, "GET", f"/api/v1/sessions/{sid}", user))["ended_at"] is not None

    await wait_until(ended, timeout=30, interval=0.1, what=f"session {sid} ended")
    return sid


async def play(server: HelplineServer, devices: dict[str, Device], device_ids: dict[str, str],
               plan: Plan) -> tuple[str, list[str]]:
    device = devices[plan.device]
    rid = await device.open(plan.summary)
    sids: list[str] = []
    base = f"/api/v1/requests/{rid}"
    who = plan.technician or "root"
    if plan.technician:
        await call(server, "POST", base + "/claim", plan.technician)
    for _ in range(plan.sessions):
        sids.append(await session_from(server, device_ids[plan.device], rid, plan.technician))
    if plan.escalate:
        await call(server, "POST", base + "/escalate", who, {"notes": "needs second level"})
        if plan.technician:
            await call(server, "POST", base + "/claim", plan.technician)
    if plan.resolve:
        await call(server, "POST", base + "/resolve", who, {"category": plan.category, "notes": "done"})
    if plan.reopen:
        await call(server, "POST", base + "/reopen", who)
        if plan.technician:
            await call(server, "POST", base + "/claim", plan.technician)
        await call(server, "POST", base + "/resolve", who, {"category": plan.category, "notes": "done again"})
    return rid, sids


# --- the expected figures, computed here -------------------------------------------------------


@dataclass
class Truth:
    """One request as read back from the API: its stored timestamps and outcome."""

    created_at: float
    group: str
    category: str
    technician: str
    events: list[tuple[float, str]]
    sessions: list[tuple[float, float]]
    answer: tuple[int, str] | None
    asked: bool


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def stat(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "median": None, "p90": None}
    return {"n": len(values), "mean": sum(values) / len(values), "median": nearest_rank(values, 50),
            "p90": nearest_rank(values, 90)}


def expected(truths: list[Truth], as_of: float) -> dict[str, Any]:
    mtta, ttc, aht, mttr, scores = [], [], [], [], []
    yes = no = pending = resolved = 0
    for t in truths:
        kinds = [k for _, k in t.events]
        claims = [at for at, k in t.events if k == "claimed"]
        if claims:
            mtta.append(min(claims) - t.created_at)
        if t.sessions:
            ttc.append(min(s for s, _ in t.sessions) - t.created_at)
        resolutions = [at for at, k in t.events if k == "resolved"]
        reopens = [at for at, k in t.events if k == "reopened"]
        final = max(resolutions) if resolutions and (not reopens or max(resolutions) > max(reopens)) else None
        if final is not None:
            resolved += 1
            mttr.append(final - t.created_at)
            if t.sessions:
                before = [e for _, e in t.sessions if e <= final]
                wrap = min(1800.0, final - max(before)) if before else 0.0
                aht.append(sum(e - s for s, e in t.sessions) + wrap)
        if resolutions:
            first = min(resolutions)
            if as_of - first < 7 * DAY:
                pending += 1
            elif len(t.sessions) <= 1 and not any(k in ("reopened", "escalated") and at <= first + 7 * DAY
                                                  for at, k in t.events):
                yes += 1
            else:
                no += 1
        if t.answer is not None:
            scores.append(float(t.answer[0]))
        assert "created" in kinds
    asked = sum(1 for t in truths if t.asked)
    return {
        "requests": len(truths), "resolved": resolved, "mtta": stat(mtta), "time_to_connect": stat(ttc),
        "aht": stat(aht), "mttr": stat(mttr), "fcr_rate": yes / (yes + no) if yes + no else None,
        "fcr_yes": yes, "fcr_no": no, "fcr_pending": pending, "csat": stat(scores),
        "csat_satisfied": sum(1 for s in scores if s >= 4) / len(scores) if scores else None,
        "surveys_asked": asked, "surveys_answered": len(scores),
        "response_rate": len(scores) / asked if asked else None,
    }


def same(actual: Any, wanted: Any, where: str) -> None:
    """Deep comparison; floats to a microsecond (the CSV rounds to 6 decimals)."""
    if isinstance(wanted, dict):
        assert isinstance(actual, dict) and set(actual) >= set(wanted), (where, actual)
        for key, value in wanted.items():
            same(actual[key], value, f"{where}.{key}")
    elif isinstance(wanted, float) and actual is not None:
        assert abs(float(actual) - wanted) <= 1e-6 + 1e-9 * abs(wanted), (where, actual, wanted)
    else:
        assert actual == wanted, (where, actual, wanted)


def buckets_of(truths: list[Truth], key: Callable[[Truth], str], as_of: float) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Truth]] = {}
    for t in truths:
        groups.setdefault(key(t), []).append(t)
    return {k: expected(v, as_of) for k, v in groups.items()}


async def read_back(server: HelplineServer, history: list[tuple[Plan, str, list[str]]],
                    devices: dict[str, Device]) -> list[Truth]:
    asked = {a.request_id for d in devices.values() for a in d.asks}
    truths = []
    for plan, rid, sids in history:
        view = await call(server, "GET", f"/api/v1/requests/{rid}", "root")
        sessions = []
        for sid in sids:
            s = await call(server, "GET", f"/api/v1/sessions/{sid}", "root")
            sessions.append((float(s["started_at"]), float(s["ended_at"])))
        events = [(float(e["at"]), str(e["kind"])) for e in view["events"]]
        claims = [e["actor"] for e in view["events"] if e["kind"] == "claimed"]
        technician = view["resolved_by"] or view["claimed_by"] or (claims[-1] if claims else "") or "(none)"
        truths.append(Truth(float(view["created_at"]), view["group_name"], view["category"] or "(none)", technician,
                            events, sessions, plan.answer if rid in asked else None, rid in asked))
    return truths


async def build_history(server: HelplineServer, devices: dict[str, Device], device_ids: dict[str, str],
                        history_plans: list[Plan]) -> list[Truth]:
    """Play every plan, wait for the planned survey answers, check each resolved request was asked
    exactly once (a reopened one is not asked again), and read the stored history back."""
    history = [(p, *await play(server, devices, device_ids, p)) for p in history_plans]
    answered = sum(1 for p in history_plans if p.answer is not None)

    async def surveys_in() -> bool:
        report = await call(server, "GET", "/api/v1/kpis", "root")
        return bool(report["total"]["surveys_answered"] == answered)

    await wait_until(surveys_in, timeout=60, interval=0.2, what=f"{answered} survey answers stored")
    asks = [a.request_id for d in devices.values() for a in d.asks]
    assert len(asks) == len(set(asks)) == sum(1 for p in history_plans if p.resolve)
    truths = await read_back(server, history, devices)
    assert sum(len(t.sessions) for t in truths) == sum(p.sessions for p in history_plans)
    return truths


# --- the test ---------------------------------------------------------------------------------


async def test_fifty_six_requests_kpis_match_api_csv_metrics_and_dashboard(tmp_path: Path,
                                                                          xvfb: XvfbHandle) -> None:  # noqa: F811
    """56 requests through the real flows; every KPI computed here equals the API's, the CSV's, the
    metrics endpoint's and the dashboard's — total and per technician, group and category; FCR is
    'pending' for all before 7 days and decided 8 days later; each resolved request asked its survey once."""
    history_plans = plans()
    assert len(history_plans) >= 50 and any(p.reopen for p in history_plans) and any(p.escalate for p in history_plans)
    answers = {p.summary: p.answer for p in history_plans}
    sessions_wanted = sum(p.sessions for p in history_plans)
    async with running_server(tmp_path / "srv", metrics=MetricsConfig(token=TOKEN)) as server:
        install_test_auth(server)
        # This history opens more than a device's hourly allowance of new requests (server/requests/device_limits).
        on_open = server.agent_handlers.get(RequestOpen)
        on_open.__self__.limits.limits["open"] = (1000, 3600.0)  # type: ignore[union-attr]
        state_a = await enroll_agent(server, tmp_path / "a")
        state_b = await enroll_agent(server, tmp_path / "b", group="other")
        device_ids = {"a": state_a.device_id, "b": state_b.device_id}
        ui = ScriptedConsentUI([True] * sessions_wanted)
        # One agent after the other: agent/help's socket set-up changes the process-wide umask across
        # an await, so two agents starting at once in one process can leave it at 0o177.
        async with running_agent(state_a, setup=configure_agent(xvfb.display, ui)) as agent_a:
            await asyncio.wait_for(agent_a.client.ready.wait(), 30)
            async with running_agent(state_b) as agent_b:
                await asyncio.wait_for(agent_b.client.ready.wait(), 30)
                devices = {"a": Device(agent_a, answers), "b": Device(agent_b, answers)}
                started = time.time()
                truths = await build_history(server, devices, device_ids, history_plans)
                built_s = time.time() - started

        now = time.time()
        later = now + 8 * DAY
        total_now, total_later = expected(truths, now), expected(truths, later)
        assert total_now["fcr_pending"] == sum(1 for p in history_plans if p.resolve) and total_now["fcr_yes"] == 0
        assert total_later["fcr_yes"] > 0 and total_later["fcr_no"] > 0 and total_later["fcr_pending"] == 0

        # The API: now (FCR pending) and 8 days later (decided), total and per bucket.
        report = await call(server, "GET", "/api/v1/kpis", "root")
        same(report["total"], total_now, "api now")
        window = {"from": started - 60, "to": now + 60, "as_of": later}
        def day(t: Truth) -> str:
            return datetime.fromtimestamp(t.created_at, UTC).date().isoformat()

        def week(t: Truth) -> str:
            date = datetime.fromtimestamp(t.created_at, UTC).date()
            return date.fromordinal(date.toordinal() - date.weekday()).isoformat()

        for by, key_of in (("technician", lambda t: t.technician), ("group", lambda t: t.group),
                           ("category", lambda t: t.category), ("day", day), ("week", week)):
            query = "&".join(f"{k}={v}" for k, v in {**window, "by": by}.items())
            report = await call(server, "GET", f"/api/v1/kpis?{query}", "root")
            same(report["total"], total_later, f"api {by} total")
            wanted = buckets_of(truths, key_of, later)
            assert [b["key"] for b in report["buckets"]] == sorted(wanted), (by, report["buckets"])
            for bucket in report["buckets"]:
                same(bucket["figures"], wanted[bucket["key"]], f"api {by}={bucket['key']}")

        # Only the groups the caller may see: bob holds rights on 'other' alone.
        only_b = [t for t in truths if t.group == "other"]
        report = await call(server, "GET", "/api/v1/kpis", "bob")
        same(report["total"], expected(only_b, time.time()), "api bob")

        # The CSV: the whole period's row and one per technician.
        query = "&".join(f"{k}={v}" for k, v in {**window, "by": "technician"}.items())
        async with aiohttp.ClientSession() as http, http.get(
                f"{console_url(server)}/api/v1/kpis.csv?{query}", headers={"X-Test-User": "root"},
                ssl=tls.agent_client_context(server.pki.ca_pem, None, None)
        ) as resp:
            assert resp.status == 200 and resp.content_type == "text/csv"
            rows = {r["bucket"]: r for r in csv.DictReader(io.StringIO(await resp.text()))}
        wanted_rows = {"(all)": total_later, **buckets_of(truths, lambda t: t.technician, later)}
        assert set(rows) == set(wanted_rows)
        for bucket, figures in wanted_rows.items():
            for column, value in flat(figures).items():
                cell = rows[bucket][column]
                same(None if cell == "" else float(cell), value, f"csv {bucket}.{column}")

        # The metrics endpoint: the collector's snapshot, refreshed now, scraped with the token.
        await kpi_metrics.refresh(server.console_app[COLLECTOR], server.db, time.time())
        async with aiohttp.ClientSession() as http, http.get(
                f"{console_url(server)}/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                ssl=tls.agent_client_context(server.pki.ca_pem, None, None)
        ) as resp:
            assert resp.status == 200
            scraped = await resp.text()
        samples = metric_samples(scraped)
        same(samples['helpline_kpi_duration_seconds{kpi="mtta",stat="mean"}'], total_now["mtta"]["mean"], "metrics")
        same(samples['helpline_kpi_duration_seconds{kpi="mttr",stat="p90"}'], total_now["mttr"]["p90"], "metrics")
        same(samples['helpline_kpi_csat_score{stat="mean"}'], total_now["csat"]["mean"], "metrics")
        same(samples['helpline_kpi_ratio{kpi="survey_response"}'], total_now["response_rate"], "metrics")
        same(samples['helpline_kpi_requests{what="created"}'], float(N), "metrics")

        # The dashboard in Chromium: tiles (raw values) and the per-technician table.
        boss = await make_user(server, "boss", "admin", groups={"*": None})
        async with console_browser(server) as console:
            page = console.page
            await console.login(boss)
            await page.goto(f"{console.base}/#/kpis")
            await page.wait_for_selector("#kpi-body[data-loaded='1']", timeout=30_000)
            total = expected(truths, time.time())
            for tile, value in (("mtta", total["mtta"]["mean"]), ("time_to_connect", total["time_to_connect"]["mean"]),
                                ("aht", total["aht"]["mean"]), ("mttr", total["mttr"]["mean"]),
                                ("csat", total["csat"]["mean"]), ("response_rate", total["response_rate"]),
                                ("requests", float(total["requests"]))):
                raw = await page.get_attribute(f"[data-kpi='{tile}']", "data-value")
                same(float(raw or "nan"), value, f"dashboard tile {tile}")
            assert await page.get_attribute("[data-kpi='fcr']", "data-value") == ""  # all pending today
            fcr_text = await page.inner_text("[data-kpi='fcr'] .kpi-sub")
            assert f"{total['fcr_pending']} pending" in fcr_text
            by_tech = buckets_of(truths, lambda t: t.technician, time.time())
            keys = await page.eval_on_selector_all("#kpi-by-technician tbody tr", "rs => rs.map(r => r.dataset.key)")
            assert keys == sorted(by_tech)
            for key, figures in by_tech.items():
                cell = await page.inner_text(f"#kpi-by-technician tr[data-key='{key}'] td[data-col='requests']")
                assert cell == str(figures["requests"])
                cell = await page.inner_text(f"#kpi-by-technician tr[data-key='{key}'] td[data-col='mtta_median']")
                assert cell == fmt_duration(figures["mtta"]["median"]), (key, cell)
            assert await page.locator("#kpi-charts .chart").count() == 2
            assert "/api/v1/kpis.csv?from=" in (await page.get_attribute("#kpi-csv", "href") or "")
            assert not console.csp_violations(), console.errors
            await console.shot("kpis-dashboard")
        print(f"history of {N} requests ({sessions_wanted} sessions) built in {built_s:.1f} s")


def flat(figures: dict[str, Any]) -> dict[str, Any]:
    """The CSV's column names for one set of figures."""
    out: dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out.update({f"{key}_{part}": v for part, v in value.items()})
        else:
            out[key] = value
    return {k: (float(v) if isinstance(v, int) else v) for k, v in out.items()}


def metric_samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line.startswith("helpline_kpi_"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def js_round(x: float) -> int:
    """JavaScript's Math.round (halves up; Python's round() goes to even)."""
    return math.floor(x + 0.5)


def fmt_duration(s: float | None) -> str:
    """console/static/js/pages/kpis.js fmtDuration, for comparing table cells."""
    if s is None:
        return "—"
    total = js_round(s)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60} s"
    if total < DAY:
        return f"{total // 3600} h {js_round((total % 3600) / 60)} min"
    return f"{int(total // DAY)} d {js_round((total % DAY) / 3600)} h"
