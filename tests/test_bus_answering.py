"""Routed requests answered by a node are capped and end with the node (issue 20 review, finding 13).

A real nats-server; a :class:`~server.bus.routing.Router` whose call runner waits (as a forwarded join waits
for the device user) is asked over the bus, as another node asks it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import nats

from server.bus import routing
from server.bus.node import NodeBus
from server.bus.nodes import NodeDirectory
from server.bus.routing import NodeCall, Router
from server.connections import ConnectionRegistry
from server.store import Database
from tests.harness import wait_until
from tests.nats_server import nats_server


async def test_answers_are_capped_and_cancelled_when_the_bus_closes(tmp_path: Path) -> None:
    with nats_server(tmp_path / "nats") as server:
        asker, answerer = await nats.connect(server.url), await nats.connect(server.url)
        release = asyncio.Event()
        started, cancelled = 0, 0

        async def run_call(_call: NodeCall) -> tuple[int, dict[str, object]]:
            nonlocal started, cancelled
            started += 1
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancelled += 1
                raise
            return 200, {}

        router = Router(answerer, "node-c", "https://c.example", ConnectionRegistry(), run_call=run_call)

        def no_db() -> Database:
            raise AssertionError("closing the bus reads no database")

        bus = NodeBus(answerer, router, NodeDirectory(no_db, "node-c", "https://c.example"),
                      await router.listen())
        payload = msgspec.json.encode(NodeCall(action="join", session_id="s-1", user_id="u-1"))
        subject = "helpline.node.node-c.call"
        waiting = [asyncio.create_task(asker.request(subject, payload, timeout=60))
                   for _ in range(routing.MAX_ANSWERING)]
        await wait_until(lambda: started == routing.MAX_ANSWERING, timeout=30, what="every call running")
        busy = json.loads((await asker.request(subject, payload, timeout=30)).data)
        assert busy["error"]["code"] == "busy" and busy["error"]["status"] == 503, busy
        assert router.answering == routing.MAX_ANSWERING and started == routing.MAX_ANSWERING

        await asyncio.wait_for(bus.close(), 30)
        assert cancelled == routing.MAX_ANSWERING and router.answering == 0
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await asker.close()
