"""Alert webhooks: a receiver that fails twice then answers gets each alert event exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from protocol.messages import HealthBatch, HealthSample
from server import devices
from server.cmdb import ingest, settings
from server.store import Database, open_database
from tests.test_store_backends import FakeConn


@pytest.fixture
async def receiver() -> AsyncIterator[dict[str, Any]]:
    """A local HTTP receiver: answers 500 to the first two POSTs, then 200; records what it accepted."""
    state: dict[str, Any] = {"calls": 0, "accepted": [], "event": asyncio.Event()}

    async def hook(request: web.Request) -> web.Response:
        state["calls"] += 1
        if state["calls"] <= 2:
            return web.Response(status=500, text="not yet")
        state["accepted"].append((request.headers["X-Helpline-Delivery"], await request.json()))
        state["event"].set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state["url"] = f"http://127.0.0.1:{port}/hook"
    yield state
    await runner.cleanup()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield database
    await database.close()


async def test_webhook_retried_until_receiver_answers_then_delivered_once(db: Database,
                                                                          receiver: dict[str, Any]) -> None:
    """Disk alert opens → POST fails twice (500) → retried with backoff → accepted once; then the resolve event."""
    from server.cmdb import webhooks

    await settings.set_webhook(db, url=receiver["url"], backoff_s=0.02, backoff_cap_s=0.1)
    await devices.ensure_group(db, "lab")
    async with db.transaction() as tx:
        await devices.register(tx, "dev-1", "lab", "s", time.time() + 86400)
    conn = FakeConn(db, "dev-1")
    await ingest.on_health(conn, HealthBatch(samples=[HealthSample(seq=1, ts=time.time(),
                                                                   metrics={"disks": {"/": 2.0}})]))
    loop = asyncio.create_task(webhooks.run(lambda: db, interval=0.01))
    try:
        await asyncio.wait_for(receiver["event"].wait(), 10)
        await ingest.on_health(conn, HealthBatch(samples=[HealthSample(seq=2, ts=time.time(),
                                                                       metrics={"disks": {"/": 50.0}})]))

        async def resolved_delivered() -> None:
            while len(receiver["accepted"]) < 2:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(resolved_delivered(), 10)
    finally:
        loop.cancel()
    events = [(body["event"], body["alert"]["rule"], body["alert"]["severity"]) for _, body in receiver["accepted"]]
    assert events == [("alert.opened", "disk_free", "critical"), ("alert.resolved", "disk_free", "critical")]
    assert receiver["calls"] == 4
    assert len({delivery for delivery, _ in receiver["accepted"]}) == 2
    rows = await db.fetchall("SELECT attempts, delivered_at, last_error FROM webhook_deliveries ORDER BY id")
    assert rows[0]["attempts"] == 3 and rows[0]["delivered_at"] is not None and "500" in rows[0]["last_error"]


async def test_webhook_gives_up_after_max_attempts(db: Database) -> None:
    """An unreachable receiver is retried max_attempts times, then the delivery is marked failed (logged)."""
    import aiohttp

    from server.cmdb import webhooks

    await settings.set_webhook(db, url="http://127.0.0.1:9/none", backoff_s=0.0, max_attempts=3, timeout_s=1.0)
    await db.execute("INSERT INTO webhook_deliveries (url, payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?)",
                     ("http://127.0.0.1:9/none", "{}", time.time(), time.time()))
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            assert await webhooks.deliver_due(db, session, now=time.time() + 1) == 0
    row = await db.fetchone("SELECT attempts, failed_at FROM webhook_deliveries")
    assert row is not None and row["attempts"] == 3 and row["failed_at"] is not None
