"""The recovery routes' per-address limit is one budget across nodes (server/recovery.py ``AttemptBudget``).

Two real server nodes (real TLS) on one PostgreSQL schema: requests from one address spread over both nodes
share its 20 a minute (before, each node counted its own, so two nodes let 40 through), sent at once so the
per-address lock is what keeps two nodes from both taking the last place. Needs HELPLINE_TEST_PG_URL; fails,
not skips, without it. The node's own in-memory gate, in front of the database, is checked on SQLite.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp

from certs import tls
from server import recovery
from server.app import HelplineServer
from server.recovery_api import ATTEMPTS_PER_MINUTE
from server.store import open_database
from tests import pg_store
from tests.harness import console_url, make_pki, running_server


async def _nonce(http: aiohttp.ClientSession, node: HelplineServer) -> tuple[int, str | None]:
    ctx = tls.agent_client_context(node.pki.ca_pem, None, None)
    async with http.post(f"{console_url(node)}/api/v1/enroll/recover/nonce", json={"device_id": "dev-1"},
                         ssl=ctx) as response:
        await response.read()
        return response.status, response.headers.get("Retry-After")


async def test_one_addresses_budget_is_shared_by_the_nodes(tmp_path: Path) -> None:
    """20 nonce requests spread over nodes A and C pass, the 21st is refused (429, Retry-After) on either node;
    the window slides on for everyone; another address has its own budget."""
    if not os.environ.get("HELPLINE_TEST_PG_URL"):
        raise RuntimeError("this test needs HELPLINE_TEST_PG_URL (two nodes share one PostgreSQL)")
    common = {"pki_dir": make_pki(tmp_path / "pki"), "database_url": pg_store.url_for(tmp_path / "shared")}
    async with running_server(tmp_path / "a", **common) as a, running_server(tmp_path / "c", **common) as c, \
            aiohttp.ClientSession() as http:
        # 40 at once, 20 to each node: exactly 20 pass, whichever node they reached.
        answers = await asyncio.gather(*(_nonce(http, a if i % 2 else c) for i in range(2 * ATTEMPTS_PER_MINUTE)))
        assert sorted(status for status, _ in answers) == [200] * ATTEMPTS_PER_MINUTE + [429] * ATTEMPTS_PER_MINUTE
        for node in (a, c):
            status, retry_after = await _nonce(http, node)
            assert status == 429 and retry_after is not None and 1 <= int(retry_after) <= 60, (status, retry_after)
        rows = await a.db.fetchall("SELECT peer FROM recovery_attempts")
        assert len(rows) == ATTEMPTS_PER_MINUTE  # refused requests took no place
        assert await recovery.take_attempt(c.db, "192.0.2.7", ATTEMPTS_PER_MINUTE) == 0.0  # another address
        later = await a.db.fetchone("SELECT MAX(at) AS at FROM recovery_attempts WHERE peer = '127.0.0.1'")
        assert later is not None
        # Past the window the address may ask again, on either node; rows go once twice the window is past.
        after = float(later["at"]) + recovery.ATTEMPT_WINDOW_S + 1
        assert await recovery.take_attempt(c.db, "127.0.0.1", ATTEMPTS_PER_MINUTE, now=after) == 0.0
        assert await recovery.prune_attempts(a.db, now=after) == 0
        # the 20, and 192.0.2.7's one
        assert await recovery.prune_attempts(a.db, now=after + recovery.ATTEMPT_WINDOW_S) == ATTEMPTS_PER_MINUTE + 1
        assert len(await a.db.fetchall("SELECT peer FROM recovery_attempts WHERE peer = '127.0.0.1'")) == 1


async def test_the_nodes_own_gate_answers_before_the_database(tmp_path: Path) -> None:
    """Past its limit an address is refused by the node's in-memory gate without a database call: with the
    database closed, the 4th request of a budget of 3 still gets its wait (the first 3 reached the database)."""
    db = await open_database(f"sqlite:///{tmp_path / 'helpline.db'}")
    budget = recovery.AttemptBudget(3)
    try:
        assert [await budget.take(db, "192.0.2.9") for _ in range(3)] == [0.0] * 3
        assert len(await db.fetchall("SELECT peer FROM recovery_attempts")) == 3
    finally:
        await db.close()
    assert 0 < await budget.take(db, "192.0.2.9") <= recovery.ATTEMPT_WINDOW_S


async def test_a_full_gate_leaves_new_addresses_to_the_database_and_ipv6_counts_by_64(tmp_path: Path) -> None:
    """With the node's table of addresses full (one /64 can no longer fill it: its addresses are one peer), each
    new address still gets its own budget, counted by the shared database instead of one bucket every newcomer
    shares (before: the first newcomer's requests locked every later one out)."""
    db = await open_database(f"sqlite:///{tmp_path / 'helpline.db'}")
    budget = recovery.AttemptBudget(2)
    assert budget.local is not None
    budget.local.max_peers = 3
    try:
        # One /64: 2 places for all its addresses, and it holds one slot of the table.
        ipv6 = [await budget.take(db, f"2001:db8:1:2::{i:x}") for i in range(1, 5)]
        assert ipv6[:2] == [0.0, 0.0] and all(wait > 0 for wait in ipv6[2:]), ipv6
        assert [await budget.take(db, f"192.0.2.{i}") for i in (1, 2)] == [0.0, 0.0]  # the table is full now
        for newcomer in ("198.51.100.1", "198.51.100.2", "2001:db8:9::1"):
            answers = [await budget.take(db, newcomer) for _ in range(3)]
            assert answers[:2] == [0.0, 0.0] and answers[2] > 0, (newcomer, answers)
        rows = await db.fetchall("SELECT peer FROM recovery_attempts")
        assert sorted({r["peer"] for r in rows}) == ["192.0.2.1", "192.0.2.2", "198.51.100.1", "198.51.100.2",
                                                     "2001:db8:1:2::/64", "2001:db8:9::/64"]
    finally:
        await db.close()
