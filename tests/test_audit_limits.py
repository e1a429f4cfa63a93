"""Unauthenticated requests cannot grow the audit log without limit: per (action, address) a few records a
minute, the rest counted into one aggregate record when the window closes; floods are answered 429."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from certs import tls
from server import audit
from server.app import HelplineServer
from server.audit_limits import MAX_PEERS, AuditThrottle, RefusalLimiter
from server.enroll_api import REFUSALS_PER_MINUTE
from tests.harness import console_url, running_server, wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _rows(server: HelplineServer, action: str) -> list[dict[str, Any]]:
    return await audit.recent(server.db, limit=1000, action=action)


async def _post_many(server: HelplineServer, path: str, bodies: list[dict[str, Any]]) -> list[tuple[int, str]]:
    ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
    connector = aiohttp.TCPConnector(ssl=ctx, limit=20)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def one(body: dict[str, Any]) -> tuple[int, str]:
            async with http.post(console_url(server) + path, json=body) as resp:
                return resp.status, resp.headers.get("Retry-After", "")
        return await asyncio.gather(*(one(b) for b in bodies))


async def test_enrollment_burst_adds_a_bounded_number_of_audit_records(tmp_path: Path) -> None:
    """200 bad enrollment attempts from one address: 401 until the refusal limit, then 429 with Retry-After; the
    audit log grows by 5 records plus, when the minute closes, one aggregate counting the other 195."""
    async with running_server(tmp_path / "srv") as server:
        clock = FakeClock()
        server.audit_throttle.clock = clock
        before = len(await audit.recent(server.db, limit=10_000))
        bodies = [{"token": f"hlt_nope.{i}", "csr": "x"} for i in range(200)]
        answers = await _post_many(server, "/api/v1/enroll", bodies)
        statuses = [status for status, _ in answers]
        assert statuses.count(401) == REFUSALS_PER_MINUTE and statuses.count(429) == 200 - REFUSALS_PER_MINUTE
        assert all(int(retry) > 0 for status, retry in answers if status == 429)
        refused = await _rows(server, "device.enroll.refused")
        assert len(refused) == server.audit_throttle.per_window == 5
        assert len(await audit.recent(server.db, limit=10_000)) - before == 5

        clock.now += 61  # the minute closes; the server's background flush writes the aggregate
        await wait_until(lambda: _has_aggregate(server), timeout=10, what="the aggregate record")
        rows = await _rows(server, "device.enroll.refused")
        aggregate = json.loads(rows[0]["details"])
        assert aggregate["aggregate"] is True and aggregate["more"] == 195 and aggregate["peer"] == "127.0.0.1"
        assert aggregate["summary"] == "195 more from 127.0.0.1 in the last minute"
        assert len(await audit.recent(server.db, limit=10_000)) - before == 6
        assert (await audit.verify_with_anchor(server.db)).ok


async def _has_aggregate(server: HelplineServer) -> bool:
    return any(json.loads(r["details"]).get("aggregate") for r in await _rows(server, "device.enroll.refused"))


async def test_login_flood_rate_limited_records_are_bounded(tmp_path: Path) -> None:
    """Logins over the per-address limit answer 429; their auth.rate_limited records stop at 5 and the rest are
    written as one aggregate when the server stops (the last window is flushed on shutdown)."""
    async with running_server(tmp_path / "srv") as server:
        bodies = [{"username": f"nobody{i}", "password": "wrong"} for i in range(40)]
        answers = await _post_many(server, "/api/v1/auth/login", bodies)
        assert [s for s, _ in answers].count(429) == 30
        assert len(await _rows(server, "auth.rate_limited")) == 5
        db_path = tmp_path / "srv" / "helpline.db"
    async with running_server(tmp_path / "srv") as server:  # the first server flushed on stop
        rows = await _rows(server, "auth.rate_limited")
        details = [json.loads(r["details"]) for r in rows]
        assert len(rows) == 6 and details[0]["more"] == 25 and db_path.exists()


async def test_throttle_counts_each_address_and_action_apart_and_bounds_memory(tmp_path: Path) -> None:
    """Two addresses get their own budgets; past MAX_PEERS addresses new ones share one bucket; a refusal limiter
    answers again once its window slides on."""
    from server.store import open_database

    db = await open_database(f"sqlite:///{tmp_path / 'h.db'}")
    try:
        clock = FakeClock()
        throttle = AuditThrottle(per_window=2, clock=clock)
        written = [await throttle.append(db, "x", "a.refused", peer=p) for p in ["p1"] * 3 + ["p2"] * 3]
        assert written == [True, True, False, True, True, False]
        for i in range(MAX_PEERS + 50):
            throttle._windows.setdefault(("flood", f"10.{i}"), throttle._windows[("a.refused", "p1")])
        assert throttle._key("flood", "new-peer") == ("flood", "*")
        limiter = RefusalLimiter(limit=3, window_s=60, clock=clock)
        assert limiter.reserve("p") == 0
        limiter.release("p")  # a success gives its place back
        for _ in range(3):
            assert limiter.reserve("p") == 0  # refusals keep theirs
        assert 59 < limiter.reserve("p") <= 60 and limiter.reserve("q") == 0
        clock.now += 60
        assert limiter.reserve("p") == 0
    finally:
        await db.close()


async def test_an_aggregate_whose_write_failed_is_written_on_a_later_flush(tmp_path: Path) -> None:
    """The database down when the window closes (here: its file system refusing writes) must not lose the
    count: the window stays until a flush succeeds."""
    from server.store import open_database
    from server.store.errors import StoreUnavailable

    db = await open_database(f"sqlite:///{tmp_path / 'h.db'}")
    try:
        clock = FakeClock()
        throttle = AuditThrottle(clock=clock)
        for _ in range(throttle.per_window + 7):
            await throttle.append(db, "anonymous", "auth.login.failed", peer="192.0.2.9")
        clock.now += throttle.window_s + 1
        real_append = audit.append

        async def down(*_args: Any, **_kwargs: Any) -> None:
            raise StoreUnavailable("database is down (test)")

        audit.append = down  # type: ignore[assignment]
        try:
            try:
                await throttle.flush(db)
            except StoreUnavailable:
                pass
        finally:
            audit.append = real_append  # type: ignore[assignment]
        assert await throttle.flush(db) == 1
        rows = await audit.recent(db, limit=100, action="auth.login.failed")
        aggregates = [json.loads(r["details"]) if isinstance(r["details"], str) else r["details"] for r in rows]
        assert any(a.get("aggregate") and a.get("more") == 7 for a in aggregates)
    finally:
        await db.close()
