"""Inventory is validated where it arrives: a malicious agent's badly typed section is refused alone and
named in the ack (logged, that section not stored, the server unaffected), and one bad device already in the store
is skipped and flagged by the GLPI and ServiceNow exports instead of failing them for the whole fleet."""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from agent.inventory import collect_inventory
from agent.state import AgentState
from certs import tls
from helpline.cli import main
from protocol import codec
from protocol.messages import Hello, InventoryAck, InventoryReport, Message, Welcome
from server import devices
from server.cmdb import inventory_store
from server.cmdb.sections import checksum
from tests.harness import enroll_agent, running_server


@functools.lru_cache(maxsize=1)
def _real_inventory() -> dict[str, Any]:
    return collect_inventory()


def real_inventory() -> dict[str, Any]:
    return copy.deepcopy(_real_inventory())


def report(sections: dict[str, Any], *, full: bool = True) -> InventoryReport:
    return InventoryReport(full=full, sections=sections, checksums={k: checksum(v) for k, v in sections.items()})


@asynccontextmanager
async def raw_agent(state: AgentState) -> AsyncIterator[ClientConnection]:
    """The device's own mTLS control channel, driven message by message (what a malicious agent can send)."""
    ctx = tls.agent_client_context(state.ca_path, state.cert_path, state.key_path)
    async with connect(state.agent_url, ssl=ctx) as ws:
        await ws.send(codec.encode(Hello(min_version=1, max_version=1, agent_version="evil", device_id=state.device_id,
                                         capabilities=["inventory", "inventory.partial"])))
        assert isinstance(await _next(ws), Welcome)
        yield ws


async def _next(ws: ClientConnection) -> Message:
    return codec.decode(await asyncio.wait_for(ws.recv(), 10))


async def _send(ws: ClientConnection, message: InventoryReport) -> Message:
    await ws.send(codec.encode(message))
    while True:
        reply = await _next(ws)
        if getattr(reply, "in_reply_to", None) == message.id:
            return reply


BAD_SECTIONS: list[Any] = [
    pytest.param(("network", lambda s: {**s, "interfaces": [1]}), id="interface-not-an-object"),
    pytest.param(("network", lambda s: {**s, "interfaces": [{"name": "eth0", "ipv4": "10.0.0.1"}]}),
                 id="addresses-not-a-list"),
    pytest.param(("identity", lambda s: {**s, "hostname": ["pc"]}), id="hostname-not-a-string"),
    pytest.param(("displays", lambda s: {"monitors": [{"index": 1, "width": "wide"}]}), id="monitor-fields"),
    pytest.param(("security", lambda s: {**s, "firewall": "off"}), id="firewall-not-an-object"),
    pytest.param(("memory", lambda s: {**s, "total_bytes": -1}), id="negative-size"),
    pytest.param(("os", lambda s: {**s, "kernel": "x" * 5000}), id="overlong-string"),
    pytest.param(("cpu", lambda s: {**s, "smuggled": {"a": 1}}), id="unknown-field"),
]


@pytest.mark.parametrize("bad", BAD_SECTIONS)
async def test_badly_typed_section_is_refused_at_the_boundary(tmp_path: Path, bad: Any,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A section that does not fit its schema is refused with code ``invalid`` in the ack, logged, and changes
    nothing stored; the same connection's next good report is stored."""
    name, spoil = bad
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        good = real_inventory()
        async with raw_agent(state) as ws:
            assert isinstance(await _send(ws, report(good)), InventoryAck)
            before = await inventory_store.get_inventory(server.db, state.device_id)
            changes = len(await inventory_store.changes(server.db, state.device_id))
            evil = {**good, name: spoil(good.get(name) or {})}
            with caplog.at_level(logging.WARNING, logger="server.cmdb"):
                reply = await _send(ws, report(evil))
            assert isinstance(reply, InventoryAck) and reply.rejected, reply
            assert [(r.section, r.code) for r in reply.rejected] == [(name, "invalid")], reply
            assert any(r.getMessage() == "inventory sections refused"
                       and getattr(r, "device_id", None) == state.device_id for r in caplog.records)
            assert await inventory_store.get_inventory(server.db, state.device_id) == before
            assert len(await inventory_store.changes(server.db, state.device_id)) == changes
            renamed = {**good, "identity": {**good["identity"], "hostname": "still-served"}}
            assert isinstance(await _send(ws, report(renamed)), InventoryAck)
            stored = await inventory_store.get_inventory(server.db, state.device_id)
            assert stored["identity"]["hostname"] == "still-served"


async def test_exports_skip_and_flag_one_bad_stored_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A malicious agent's ``network.interfaces=[1]`` sent to the server is refused; the same data left in the store
    by an older server makes both exports skip that one device (named on stderr) and export every other one."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        good = real_inventory()
        async with raw_agent(state) as ws:
            assert isinstance(await _send(ws, report(good)), InventoryAck)
            evil = {**good, "network": {**good["network"], "interfaces": [1]}}
            refused = await _send(ws, report(evil))
            assert isinstance(refused, InventoryAck) and refused.rejected and refused.rejected[0].section == "network"
        # What an older server stored without looking.
        async with server.db.transaction() as tx:
            await devices.register(tx, "dev-bad", "default", "s-bad", time.time() + 86400)
            await inventory_store.apply_report(tx, "dev-bad", full=True, sections=evil,
                                               checksums={k: checksum(v) for k, v in evil.items()}, now=time.time())
        data = tmp_path / "srv"
        for fmt in ("glpi", "servicenow"):
            out = tmp_path / f"{fmt}.json"
            capsys.readouterr()
            code = await asyncio.to_thread(main, ["admin", "export", "--format", fmt, "--data", str(data),
                                                  "--out", str(out)])
            err = capsys.readouterr().err
            assert code == 0, err
            docs = json.loads(out.read_text())
            assert len(docs) == 1, fmt
            assert state.device_id in json.dumps(docs) and "dev-bad" not in json.dumps(docs)
            assert "dev-bad" in err and "network" in err and "skipped" in err, err
