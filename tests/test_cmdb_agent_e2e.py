"""Agent ↔ server reporting end to end over real mTLS: delta inventory, outages, restarts
mid-batch, outbox overflow and an agent killed with SIGKILL mid-send — nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.control_client import AgentClient
from agent.inventory import collect_inventory, section_checksums
from agent.reporting import Reporter
from agent.runtime import Agent
from agent.state import AgentState
from protocol.messages import HealthBatch, InventoryReport, Message
from server.cmdb import health_store, inventory_store
from tests.harness import enroll_agent, running_agent, running_server, wait_until

REPO = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def real_inventory() -> dict[str, Any]:
    return collect_inventory()


def config(state: AgentState, **overrides: Any) -> AgentConfig:
    values: dict[str, Any] = {"state_dir": state.directory, "backoff_cap_s": 0.5, "health_interval_s": 3600.0,
                              "inventory_interval_s": 3600.0}
    values.update(overrides)
    return AgentConfig(**values)


@contextlib.asynccontextmanager
async def reporting_agent(state: AgentState, cfg: AgentConfig, inventory: Callable[[], dict[str, Any]],
                          sent: list[Message] | None = None) -> AsyncIterator[tuple[AgentClient, Reporter]]:
    """An in-process agent whose inventory comes from ``inventory``; its reporter is stopped on exit."""
    holder: list[Reporter] = []

    def setup(agent: Agent) -> None:
        reporter, client = agent.reporter, agent.client
        reporter.collect = inventory
        holder.append(reporter)
        if sent is not None:
            original = client.send

            async def spy(message: Message) -> None:
                sent.append(message)
                await original(message)

            client.send = spy  # type: ignore[method-assign]

    try:
        async with running_agent(state, cfg, setup=setup) as agent:
            yield agent.client, holder[0]
    finally:
        if holder:
            await holder[0].stop()


async def enrolled(tmp_path: Path) -> tuple[AgentState, dict[str, int]]:
    """Enroll a device, then stop that server; return the state and the ports to restart on."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        return state, {"agent_port": server.agent_port, "console_port": server.console_port}


async def test_delta_after_package_change_carries_only_that_section(tmp_path: Path) -> None:
    """First connection sends a full inventory; a package install sends only 'software'; a reconnect with
    nothing changed sends an empty delta of checksums only (< 2 KB)."""
    inv = copy.deepcopy(real_inventory())
    state, ports = await enrolled(tmp_path)
    sent: list[Message] = []
    async with running_server(tmp_path / "srv", **ports) as server:
        async with reporting_agent(state, config(state), lambda: copy.deepcopy(inv), sent) as (_client, reporter):
            await wait_until(lambda: _stored_is(server, state, inv), what="full inventory stored")
            reports = [m for m in sent if isinstance(m, InventoryReport)]
            assert reports[0].full and set(reports[0].sections) == set(inv)
            inv["software"]["packages"].append({"name": "helpline-test-pkg", "version": "1.0-1", "arch": "all",
                                                "source": "dpkg"})
            assert await reporter.send_inventory()
            delta = [m for m in sent if isinstance(m, InventoryReport)][-1]
            assert not delta.full and set(delta.sections) == {"software"}
            changes = await inventory_store.changes(server.db, state.device_id, section="software")
            assert [(c["path"], c["change"]) for c in changes] == [("helpline-test-pkg:all", "added"),
                                                                   ("", "section_added")]
            assert await _stored_is(server, state, inv)
        sent.clear()
        async with reporting_agent(state, config(state), lambda: copy.deepcopy(inv), sent):
            await wait_until(lambda: any(isinstance(m, InventoryReport) for m in sent), what="reconnect report")
            from protocol.codec import encode

            again = next(m for m in sent if isinstance(m, InventoryReport))
            assert not again.full and again.sections == {} and len(encode(again)) < 2048


async def _stored_is(server: Any, state: AgentState, inv: dict[str, Any]) -> bool:
    return await inventory_store.stored_checksums(server.db, state.device_id) == section_checksums(inv)


async def _seqs(server: Any, state: AgentState) -> list[int]:
    return await health_store.seqs(server.db, state.device_id)


async def test_outage_every_sample_arrives_exactly_once(tmp_path: Path) -> None:
    """Server down while the agent samples every 50 ms (dozens of samples offline), then back: the stored
    seq set equals exactly the set the agent produced, and the outbox drains."""
    state, ports = await enrolled(tmp_path)
    cfg = config(state, health_interval_s=0.05)
    inv = real_inventory()
    async with reporting_agent(state, cfg, lambda: inv) as (_client, reporter):
        async with running_server(tmp_path / "srv", **ports) as server:
            await wait_until(lambda: _count_at_least(server, state, 10), what="samples while online")
        taken = reporter.samples_taken
        await wait_until(lambda: reporter.samples_taken >= taken + 80, timeout=30, what="samples while offline")
        assert reporter.outbox.count("health") >= 80
        async with running_server(tmp_path / "srv", **ports) as server:
            await wait_until(lambda: _count_at_least(server, state, reporter.samples_taken - 5), timeout=20,
                             what="backlog delivered")
            await reporter.stop_sampling()
            produced = list(range(1, reporter.outbox.last_seq() + 1))
            await wait_until(lambda: _seqs_equal(server, state, produced), timeout=20, what="every sample once")
            await wait_until(lambda: reporter.outbox.count("health") == 0, what="outbox drained")


async def _count_at_least(server: Any, state: AgentState, n: int) -> bool:
    return len(await _seqs(server, state)) >= n


async def _seqs_equal(server: Any, state: AgentState, expected: list[int]) -> bool:
    return await _seqs(server, state) == expected


async def test_server_restart_after_commit_before_ack(tmp_path: Path) -> None:
    """The server stores a 500-sample batch and goes down before acking it: after the restart the
    agent resends, the duplicate is acknowledged, and each of the 1,200 samples is stored once."""
    state, ports = await enrolled(tmp_path)
    inv = real_inventory()
    async with reporting_agent(state, config(state, health_interval_s=60.0), lambda: inv) as (_client, reporter):
        await reporter.stop_sampling()
        for i in range(1200):
            await asyncio.to_thread(reporter.outbox.add, "health", {"cpu_percent": float(i % 100)}, time.time())
        produced = list(range(1, reporter.outbox.last_seq() + 1))
        committed = asyncio.Event()
        async with running_server(tmp_path / "srv", **ports) as server:
            async def commit_without_ack(conn: Any, msg: HealthBatch) -> None:
                async with server.db.transaction() as tx:
                    await health_store.ingest(tx, conn.device_id, msg.samples, msg.gaps, time.time())
                committed.set()

            server.agent_handlers.replace(HealthBatch, commit_without_ack)
            await asyncio.wait_for(committed.wait(), 20)
            assert len(await _seqs(server, state)) == 500
        assert reporter.outbox.count("health") == len(produced)
        async with running_server(tmp_path / "srv", **ports) as server:
            await wait_until(lambda: _seqs_equal(server, state, produced), timeout=20, what="all samples once")
            await wait_until(lambda: reporter.outbox.count("health") == 0, what="outbox drained")


async def test_outbox_overflow_is_reported_as_a_gap(tmp_path: Path) -> None:
    """With room for 20 samples and 60+ taken offline, the oldest are dropped and the server records a gap
    whose count matches; stored samples plus gaps cover every seq the agent produced."""
    state, ports = await enrolled(tmp_path)
    cfg = config(state, health_interval_s=0.05, outbox_max_days=20 * 0.05 / 86400)
    async with reporting_agent(state, cfg, real_inventory) as (_client, reporter):
        await wait_until(lambda: reporter.samples_taken >= 60, timeout=30, what="offline samples")
        await reporter.stop_sampling()
        dropped = reporter.outbox.dropped_total("health")
        assert dropped >= 40 and reporter.outbox.count("health") == 20
        async with running_server(tmp_path / "srv", **ports) as server:
            await wait_until(lambda: reporter.outbox.count("health") == 0 and not reporter.outbox.gaps("health"),
                             timeout=20, what="outbox and gaps delivered")
            gaps = await health_store.gaps_of(server.db, state.device_id)
            assert sum(g["dropped"] for g in gaps) == dropped
            covered = set(await _seqs(server, state))
            for g in gaps:
                covered |= set(range(g["from_seq"], g["to_seq"] + 1))
            assert covered == set(range(1, reporter.outbox.last_seq() + 1))


@pytest.fixture
def agent_processes() -> Any:
    """Agent subprocesses started by a test; killed by PID at the end whatever happens."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _start_agent(state: AgentState, config_file: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "helpline", "agent", "run", "--state", str(state.directory),
                                 "--config", str(config_file)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def _outbox_state(state: AgentState) -> tuple[int, set[int]]:
    conn = sqlite3.connect(state.outbox_path)
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        pending = {r[0] for r in conn.execute("SELECT seq FROM outbox")}
    finally:
        conn.close()
    return (int(row[0]) if row else 0), pending


async def test_agent_killed_with_sigkill_mid_send_loses_nothing(tmp_path: Path, agent_processes: list[Any]) -> None:
    """A real agent process is SIGKILLed after sending a batch the server has not acked; restarted, it resends:
    every seq it ever produced is stored once (or still waits in its outbox)."""
    state, ports = await enrolled(tmp_path)
    config_file = tmp_path / "agent.toml"
    config_file.write_text("[agent]\nhealth_interval_s = 0.05\nbackoff_cap_s = 0.5\ninventory_interval_s = 3600\n")
    log = tmp_path / "agent.log"
    async with running_server(tmp_path / "srv", **ports) as server:
        hold = asyncio.Event()
        held = asyncio.Event()

        async def maybe_hold(conn: Any, msg: HealthBatch) -> None:
            if hold.is_set():
                async with server.db.transaction() as tx:  # stored, but the ack never leaves
                    await health_store.ingest(tx, conn.device_id, msg.samples, msg.gaps, time.time())
                held.set()
                return
            await normal(conn, msg)

        normal = server.agent_handlers.replace(HealthBatch, maybe_hold)
        first = _start_agent(state, config_file, log)
        agent_processes.append(first)
        await wait_until(lambda: _count_at_least(server, state, 20), timeout=30, what="agent reporting")
        hold.set()
        await asyncio.wait_for(held.wait(), 10)
        os.kill(first.pid, signal.SIGKILL)
        assert await asyncio.to_thread(first.wait, 10) == -signal.SIGKILL
        last_before, pending = _outbox_state(state)
        assert pending, "the unacked batch must still be in the outbox"
        hold.clear()
        second = _start_agent(state, config_file, log)
        agent_processes.append(second)
        await wait_until(lambda: not (_outbox_state(state)[1] & pending), timeout=30, what="held batch resent, acked")
        assert await _covers(server, state, last_before)
        await wait_until(lambda: _count_at_least(server, state, last_before + 10), timeout=30, what="new samples")
        second.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait, 10) == 0
        last, pending = _outbox_state(state)
        stored = await _seqs(server, state)
        assert len(stored) == len(set(stored))
        assert set(stored) | pending == set(range(1, last + 1))


async def _covers(server: Any, state: AgentState, n: int) -> bool:
    return set(range(1, n + 1)) <= set(await _seqs(server, state))


async def test_lost_outbox_numbers_new_samples_above_the_stored_ones(tmp_path: Path) -> None:
    """The outbox file is deleted while the device keeps its identity: the restarted agent learns the
    server's highest seq from welcome, numbers above it, and its new samples are stored, not dropped."""
    state, ports = await enrolled(tmp_path)
    cfg = config(state, health_interval_s=0.05)
    async with running_server(tmp_path / "srv", **ports) as server:
        async with reporting_agent(state, cfg, real_inventory) as (_client, reporter):
            await wait_until(lambda: _count_at_least(server, state, 20), timeout=20, what="first samples stored")
            await reporter.stop_sampling()
            await wait_until(lambda: reporter.outbox.count("health") == 0, what="outbox drained")
        before = await _seqs(server, state)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{state.outbox_path}{suffix}").unlink(missing_ok=True)
        async with reporting_agent(state, cfg, real_inventory) as (_client, reporter):
            await wait_until(lambda: _count_at_least(server, state, len(before) + 20), timeout=20,
                             what="new samples stored after the outbox was lost")
            await reporter.stop_sampling()
            await wait_until(lambda: reporter.outbox.count("health") == 0, what="outbox drained")
            last, taken = reporter.outbox.last_seq(), reporter.samples_taken
        stored = await _seqs(server, state)
        assert stored[:len(before)] == before
        assert stored[len(before):] == list(range(before[-1] + 1, last + 1))
        assert len(stored) - len(before) == taken  # every sample of the restarted agent, none taken for a dup


async def test_welcome_health_seq_only_for_agents_that_understand_it(tmp_path: Path) -> None:
    """welcome.health_seq carries the stored maximum to agents announcing "health.seq"; an older agent's
    welcome has no such field on the wire (it would refuse an unknown one)."""
    from protocol import codec
    from protocol.messages import HealthSample, Hello, Welcome

    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        async with server.db.transaction() as tx:
            await health_store.ingest(tx, state.device_id, [HealthSample(seq=41, ts=time.time(), metrics={})], [],
                                      time.time())

        class Conn:
            device_id = state.device_id

            def __init__(self, capabilities: list[str]) -> None:
                self.hello = Hello(min_version=1, max_version=1, agent_version="t", device_id=state.device_id,
                                   capabilities=capabilities)

        async def welcome_for(capabilities: list[str]) -> str:
            extra: dict[str, Any] = {}
            # Only the CMDB's welcome field is under test (others need a real connection's certificate).
            for provider in [p for p in server.agent_handlers.welcome_fields if p.__module__ == "server.cmdb"]:
                extra.update(await provider(Conn(capabilities)))  # type: ignore[arg-type]
            return codec.encode(Welcome(version=1, server_version="t", keepalive_s=20, **extra))

        new = await welcome_for(["inventory", "health", "health.seq"])
        decoded = codec.decode(new)
        assert isinstance(decoded, Welcome) and decoded.health_seq == 41
        old = await welcome_for(["inventory", "health"])
        assert "health_seq" not in old


async def test_client_owns_background_tasks_and_stop_hooks(tmp_path: Path) -> None:
    """client.background tasks start once with run() even offline and are cancelled when it returns;
    on_stop hooks then run once, after them (the reporter's sampling loop and outbox close use this)."""
    state, _ports = await enrolled(tmp_path)
    events: list[str] = []
    started = asyncio.Event()

    async def background(_client: AgentClient) -> None:
        events.append("started")
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            events.append("cancelled")

    async def on_stop(_client: AgentClient) -> None:
        events.append("stopped")

    def setup(agent: Agent) -> None:
        agent.client.background.append(background)
        agent.client.on_stop.append(on_stop)

    async with running_agent(state, config(state, health_interval_s=0.05), setup=setup) as agent:
        await asyncio.wait_for(started.wait(), 10)
        reporter = agent.reporter
        await wait_until(lambda: reporter.samples_taken >= 3, what="sampling while offline")
    assert events == ["started", "cancelled", "stopped"]
    taken = reporter.samples_taken
    with pytest.raises(sqlite3.ProgrammingError):
        reporter.outbox.count("health")
    assert reporter.samples_taken == taken
