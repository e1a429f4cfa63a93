"""Webhook deliveries with two nodes on one PostgreSQL: each node's delivery loop claims a row before posting it,
so every Slack/Teams/alert POST is sent once, not once per node."""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from server.cmdb import webhooks
from server.store import Database, open_database


@pytest.fixture
async def receiver() -> AsyncIterator[dict[str, Any]]:
    """A local receiver that takes a moment per POST (the nodes' passes overlap) and counts each delivery id."""
    state: dict[str, Any] = {"seen": collections.Counter()}

    async def hook(request: web.Request) -> web.Response:
        state["seen"][request.headers["X-Helpline-Delivery"]] += 1
        await asyncio.sleep(0.02)  # a receiver's latency, not synchronisation
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state["url"] = f"http://127.0.0.1:{port}/hook"
    yield state
    await runner.cleanup()


@pytest.fixture
async def two_nodes(pg_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """Two databases (as two server nodes have) on one fresh PostgreSQL schema."""
    schema = f"t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f"CREATE SCHEMA {schema}")
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}search_path={schema}"
    try:
        a = await open_database(url)
        b = await open_database(url)
        try:
            yield a, b
        finally:
            await a.close()
            await b.close()
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


async def test_two_nodes_post_each_delivery_once(two_nodes: tuple[Database, Database],
                                                 receiver: dict[str, Any]) -> None:
    a, b = two_nodes
    now = time.time()
    count = 30
    await a.executemany("INSERT INTO webhook_deliveries (url, payload, created_at, attempts, next_attempt_at)"
                        " VALUES (?, ?, ?, 0, ?)", [(receiver["url"], '{"text": "x"}', now, now)] * count)
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.gather(webhooks.deliver_due(a, http), webhooks.deliver_due(b, http))
            left = await a.fetchone("SELECT COUNT(*) AS n FROM webhook_deliveries WHERE delivered_at IS NULL")
            if left == {"n": 0}:
                break
        else:
            raise AssertionError("deliveries not all delivered within 60 s")
    seen: collections.Counter[str] = receiver["seen"]
    assert len(seen) == count
    assert set(seen.values()) == {1}, {k: v for k, v in seen.items() if v > 1}
    attempts = await a.fetchall("SELECT DISTINCT attempts FROM webhook_deliveries")
    assert attempts == [{"attempts": 1}]
