"""Delivery that one bad item cannot block (issue 12).

An oversized or wrongly typed health sample, a sample that does not even decode, a bad inventory
section: the good items around it are stored, the bad one is named with its reason (in the ack,
the server's log with the device id, the agent's log and a counter in its next samples), and the
stream goes on at once — never the 30 s ack timeout, never the same batch forever. Unit tests
for the protocol fields, the agent's trimming, outbox and batch plan; store tests on SQLite and
PostgreSQL; end to end with a real server, real mTLS, a real agent process.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect

from agent.config import AgentConfig
from agent.delivery import DrainPlan, Shape, Verdict
from agent.health import DiskUsage, fit_metrics, metrics_size, rank_disks
from agent.inventory import collect_inventory, section_checksums
from agent.outbox import Outbox
from agent.runtime import Agent
from agent.state import AgentState
from certs import tls
from protocol import codec, limits
from protocol.errors import InvalidMessage
from protocol.messages import (
    Error,
    HealthAck,
    HealthBatch,
    HealthGap,
    HealthSample,
    Hello,
    InventoryAck,
    InventoryReport,
    Message,
    SampleRejected,
    SectionRejected,
    Welcome,
)
from server.cmdb import health_store, ingest, inventory_store
from server.cmdb.sections import checksum
from server.store import Database
from tests.conftest import add_device
from tests.harness import enroll_agent, running_agent, running_server, wait_until

REPO = Path(__file__).resolve().parent.parent
LIMIT = limits.MAX_HEALTH_METRICS_BYTES
#: A retry that waited for the ack timeout would take 30 s: "at once" is well under it on a loaded box.
AT_ONCE_S = 12.0


def good(i: int) -> dict[str, Any]:
    return {"cpu_percent": float(i % 100), "mem_percent": 40.0, "disks": {"/": 50.0}}


def oversized() -> dict[str, Any]:
    """A host with 1,000 mounts: ~50 KB of disks (the root nearly full: it must survive trimming)."""
    disks = {f"/var/lib/containers/storage/overlay/{i:040d}/merged": 60.0 for i in range(1000)}
    return {"cpu_percent": 3.0, "mem_percent": 41.0, "disks": {**disks, "/": 4.0}}


WRONG_TYPES = {"cpu_percent": "high", "mem_percent": 40.0, "disks": {"/": 50.0}}
#: A metrics key over the protocol's 64 characters: the whole batch fails to decode at the server.
UNDECODABLE = {"cpu_percent": 1.0, "k" * 100: 1}


# --- protocol ----------------------------------------------------------------------------------


class _OldHealthAck(msgspec.Struct, forbid_unknown_fields=True):
    """health.ack as agents before issue 12 decode it (unknown fields refused)."""

    type: str
    in_reply_to: str
    up_to: int
    v: int
    id: str


def test_rejected_lists_are_optional_on_the_wire() -> None:
    """Without refusals the acks carry no 'rejected' (older agents decode them); with them, it round-trips."""
    plain = codec.encode(HealthAck(in_reply_to="b1", up_to=9))
    assert "rejected" not in plain
    assert msgspec.json.decode(plain, type=_OldHealthAck).up_to == 9
    assert "rejected" not in codec.encode(InventoryAck(in_reply_to="r1", checksums={}))
    named = HealthAck(in_reply_to="b1", up_to=9, rejected=[SampleRejected(seq=4, code="too_large", reason="big")])
    assert codec.decode(codec.encode(named)) == named
    inv = InventoryAck(in_reply_to="r1", checksums={}, rejected=[SectionRejected(section="os", code="invalid",
                                                                                  reason="kernel: too long")])
    assert codec.decode(codec.encode(inv)) == inv


@pytest.mark.parametrize("wire", [
    pytest.param({"seq": 1, "code": "invalid", "reason": "x" * 300}, id="overlong-reason"),
    pytest.param({"seq": -1, "code": "invalid", "reason": "x"}, id="negative-seq"),
    pytest.param({"seq": 1, "code": "invalid", "reason": "x", "extra": 1}, id="unknown-field"),
])
def test_rejected_entries_are_validated(wire: dict[str, Any]) -> None:
    """A peer's refusal entries are bounded like every other field (reason ≤ 256, seq ≥ 0, no extras)."""
    raw = json.dumps({"type": "health.ack", "id": "a1", "in_reply_to": "b1", "up_to": 1, "rejected": [wire]})
    with pytest.raises(InvalidMessage):
        codec.decode(raw)


def test_rejected_list_is_bounded() -> None:
    """At most one entry per sample of a batch (500)."""
    entries = [{"seq": i, "code": "invalid", "reason": "r"} for i in range(limits.MAX_HEALTH_BATCH + 1)]
    raw = json.dumps({"type": "health.ack", "id": "a1", "in_reply_to": "b1", "up_to": 1, "rejected": entries})
    with pytest.raises(InvalidMessage):
        codec.decode(raw)


# --- agent: trimming ---------------------------------------------------------------------------


def test_disks_ranked_root_nearly_full_then_largest() -> None:
    """'/' first, then nearly full disks (fullest first), then the rest by size."""
    ranked = rank_disks([DiskUsage("/srv", 10, 50.0), DiskUsage("/big", 1000, 70.0), DiskUsage("/full", 5, 2.0),
                         DiskUsage("/", 100, 60.0), DiskUsage("/tight", 7, 9.0)])
    assert list(ranked) == ["/", "/full", "/tight", "/big", "/srv"]


def test_fit_keeps_the_most_relevant_disks_within_the_limit() -> None:
    """1,000 mounts: the sample is cut to the limit, keeps '/' and the nearly full disks and says how many
    it left out; a sample that fits is returned unchanged."""
    small = good(1)
    assert fit_metrics(small) == small and "truncated" not in fit_metrics(small)
    disks = rank_disks([DiskUsage("/", 1 << 40, 30.0), DiskUsage("/data", 1 << 30, 3.0),
                        *(DiskUsage(f"/snap/pkg-{i:05d}/{i:05d}/mnt", 1 << 20, 80.0) for i in range(1000))])
    metrics = {**good(2), "disks": disks, "temperatures": {"acpi": [{"label": None, "current_c": 40.0}]}}
    assert metrics_size(metrics) > 2 * LIMIT
    fitted = fit_metrics(metrics)
    assert metrics_size(fitted) <= LIMIT
    assert list(fitted["disks"])[:2] == ["/", "/data"] and len(fitted["disks"]) > 200
    assert fitted["truncated"] == {"disks_dropped": 1002 - len(fitted["disks"])}
    assert fitted["temperatures"] == metrics["temperatures"] and fitted["cpu_percent"] == 2.0
    assert metrics_size({**fitted, "disks": {**fitted["disks"], "/x": 1.0}}) > LIMIT - 16  # as many as fit


def test_fit_drops_whole_optional_entries_before_any_core_metric() -> None:
    """A huge sensor list goes as a whole (named in 'truncated'); numbers and disks stay. A sample whose
    core alone is too large (hostile, broken) is emptied to its marker rather than sent to be refused."""
    sensors = {f"chip{i}": [{"label": "x" * 60, "current_c": 40.0}] * 5 for i in range(200)}
    fitted = fit_metrics({**good(3), "temperatures": sensors})
    assert metrics_size(fitted) <= LIMIT and "temperatures" not in fitted
    assert fitted["truncated"] == {"dropped": ["temperatures"]} and fitted["disks"] == {"/": 50.0}
    broken = fit_metrics({"cpu_percent": "x" * (LIMIT + 10)})
    assert broken == {"truncated": {"dropped": ["cpu_percent"]}}


# --- agent: outbox -----------------------------------------------------------------------------


def test_outbox_discard_and_repair_are_counted(tmp_path: Path) -> None:
    """discard deletes one item and counts it as rejected; repair rewrites a body in place (same seq and
    time); server-named refusals are counted; the counters survive reopening."""
    box = Outbox(tmp_path / "o.db", max_items=100)
    seqs = [box.add("health", good(i), float(i)) for i in range(4)]
    assert box.discard("health", seqs[1]) and not box.discard("health", seqs[1])
    assert box.repair("health", seqs[2], {"trimmed": True})
    box.count_rejected("health", 2)
    pending = box.pending("health", 10)
    assert [i.seq for i in pending] == [seqs[0], seqs[2], seqs[3]]
    assert (pending[1].body, pending[1].ts) == ({"trimmed": True}, 2.0)
    box.close()
    box = Outbox(tmp_path / "o.db", max_items=100)
    assert box.rejected_total("health") == 3 and box.counter("repaired.health") == 1
    box.close()


# --- agent: batch plan -------------------------------------------------------------------------


def _sizes(n: int, size: int = 100) -> list[tuple[int, int]]:
    return [(seq, size) for seq in range(1, n + 1)]


def _drain(bad: set[int], n: int, plan: DrainPlan) -> tuple[list[int], list[int], int]:
    """Run the plan against a server that refuses (whole) any batch holding a seq in ``bad``."""
    pending = list(range(1, n + 1))
    stored: list[int] = []
    dropped: list[int] = []
    refusals = 0
    while pending:
        shape = plan.shape([(seq, 100) for seq in pending], have_gaps=False)
        batch = pending[:shape.samples]
        if bad & set(batch):
            refusals += 1
            verdict = plan.refused(shape, "invalid", batch[-1])
            if verdict is Verdict.DROP_SAMPLE:
                dropped.append(batch[0])
                pending.remove(batch[0])
            else:
                assert verdict is Verdict.RETRY_NOW
            continue
        stored.extend(batch)
        del pending[:len(batch)]
    return stored, dropped, refusals


def test_plan_bisects_a_refused_batch_down_to_the_bad_sample() -> None:
    """One bad sample among 1,200 (wherever it is): only it is given up, after at most 9 refusals (~log2 500);
    batches are full size again past the refused range."""
    plan = DrainPlan()
    stored, dropped, refusals = _drain({777}, 1200, plan)
    assert dropped == [777] and stored == [s for s in range(1, 1201) if s != 777]
    assert refusals <= 9
    assert max(_drain({bad}, 1200, DrainPlan())[2] for bad in range(1, 1201, 7)) <= 9
    assert plan.shape([(s, 100) for s in range(2000, 2600)], False).samples == limits.MAX_HEALTH_BATCH


def test_plan_two_bad_samples_in_one_batch() -> None:
    """Two bad samples in the same batch are both isolated; nothing else is lost."""
    stored, dropped, _ = _drain({3, 400}, 500, DrainPlan())
    assert dropped == [3, 400] and len(stored) == 498


def test_plan_gaps_are_tried_alone_then_given_up() -> None:
    """A refused batch with gaps sends the gaps alone next; refused again, they are given up; then the
    samples go (without gaps while narrowing down)."""
    plan = DrainPlan()
    first = plan.shape(_sizes(10), have_gaps=True)
    assert first == Shape(10, True)
    assert plan.refused(first, "invalid") is Verdict.RETRY_NOW
    alone = plan.shape(_sizes(10), have_gaps=True)
    assert alone == Shape(0, True)
    assert plan.refused(alone, "invalid") is Verdict.DROP_GAPS
    assert plan.shape(_sizes(10), have_gaps=False) == Shape(10, False)


def test_plan_server_trouble_is_retried_and_never_drops() -> None:
    """'internal' or 'store_unavailable' blame the server: the same batch later, nothing given up."""
    plan = DrainPlan()
    for code in ("internal", "store_unavailable", "unexpected"):
        shape = plan.shape(_sizes(1), have_gaps=False)
        assert plan.refused(shape, code) is Verdict.RETRY_LATER
    assert plan.limit is None and plan.shape(_sizes(3), True) == Shape(3, True)


def test_plan_keeps_batches_under_the_byte_budget() -> None:
    """Near-limit samples: a batch stays under MAX_HEALTH_BATCH_BYTES (far under the 4 MiB message limit);
    a sample larger than the budget still goes alone."""
    plan = DrainPlan()
    shape = plan.shape(_sizes(500, LIMIT), have_gaps=False)
    assert shape.samples == limits.MAX_HEALTH_BATCH_BYTES // LIMIT
    assert shape.samples * LIMIT * 1.2 < limits.MAX_CONTROL_MESSAGE_BYTES
    assert DrainPlan(max_bytes=10).shape(_sizes(2, 50), have_gaps=False).samples == 1


# --- server: store level, SQLite and PostgreSQL -------------------------------------------------


class _Conn:
    """Stands in for AgentConnection: records what the handler sends back."""

    def __init__(self, db: Database, device_id: str, capabilities: list[str]) -> None:
        self.server = type("S", (), {"db": db})()
        self.device_id = device_id
        self.group = "lab"
        self.hello = Hello(min_version=1, max_version=1, agent_version="t", device_id=device_id,
                           capabilities=capabilities)
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def reply_error(self, code: str, message: str, in_reply_to: str | None) -> None:
        self.sent.append(Error(code=code, message=message, in_reply_to=in_reply_to))


def _batch(bodies: list[dict[str, Any]], first: int = 1) -> HealthBatch:
    now = time.time()
    return HealthBatch(samples=[HealthSample(seq=first + i, ts=now - 60 + i, metrics=b) for i, b in enumerate(bodies)])


async def test_bad_samples_refused_alone_and_named(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    """[good, oversized, good, wrong types, good]: the three good ones are stored, the ack covers all five and
    names the two with code and reason, the server log names them with the device id; the device's highest
    seq counts them (so a lost outbox renumbers above them)."""
    dev = await add_device(db)
    conn = _Conn(db, dev, ["health", "health.partial"])
    msg = _batch([good(1), oversized(), good(3), WRONG_TYPES, good(5)])
    with caplog.at_level(logging.WARNING, logger="server.cmdb"):
        await ingest.on_health(conn, msg)
    ack = conn.sent[-1]
    assert isinstance(ack, HealthAck) and ack.in_reply_to == msg.id and ack.up_to == 5
    assert not isinstance(ack.rejected, msgspec.UnsetType)
    assert [(r.seq, r.code) for r in ack.rejected] == [(2, "too_large"), (4, "invalid")]
    assert "limit 16384" in ack.rejected[0].reason and "cpu_percent" in ack.rejected[1].reason
    assert await health_store.seqs(db, dev) == [1, 3, 5]
    assert await health_store.max_seq(db, dev) == 5
    record = next(r for r in caplog.records if r.getMessage() == "health samples refused")
    assert getattr(record, "device_id") == dev and getattr(record, "count") == 2
    assert any("cpu_percent" in s for s in getattr(record, "samples"))
    await ingest.on_health(conn, _batch([good(6)], first=6))  # and the stream goes on
    assert isinstance(conn.sent[-1], HealthAck) and conn.sent[-1].rejected is msgspec.UNSET
    assert await health_store.seqs(db, dev) == [1, 3, 5, 6]


async def test_older_agent_gets_a_plain_ack_that_covers_refused_samples(db: Database) -> None:
    """An agent without "health.partial" gets no 'rejected' field (it would refuse it), but up_to covers the
    refused sample, so it deletes it too and moves on."""
    dev = await add_device(db)
    conn = _Conn(db, dev, ["health", "health.seq"])
    await ingest.on_health(conn, _batch([good(1), WRONG_TYPES]))
    ack = conn.sent[-1]
    assert isinstance(ack, HealthAck) and ack.up_to == 2 and ack.rejected is msgspec.UNSET
    assert "rejected" not in codec.encode(ack)
    assert await health_store.seqs(db, dev) == [1]


INVENTORY: dict[str, Any] = {
    "identity": {"hostname": "pc-1", "serial": "SN1", "model": "T14"},
    "os": {"pretty_name": "Debian GNU/Linux 12 (bookworm)"},
    "security": {"reboot_required": {"required": False}},
}


async def test_bad_section_named_and_its_stored_copy_kept(db: Database) -> None:
    """A full report with an unknown section and a badly typed one: the good sections are stored, both bad
    ones are named; the bad known one keeps its stored copy, acked under the stored checksum; a delta that
    leaves it out under that checksum is taken without asking for a full report."""
    dev = await add_device(db)
    conn = _Conn(db, dev, ["inventory", "inventory.partial"])
    await ingest.on_inventory(conn, InventoryReport(full=True, sections=INVENTORY,
                                                    checksums={k: checksum(v) for k, v in INVENTORY.items()}))
    stored_os = checksum(INVENTORY["os"])
    sections = {**INVENTORY, "identity": {"hostname": "pc-2"}, "os": {"pretty_name": ["not", "text"]},
                "gadgets": {"a": 1}}
    msg = InventoryReport(full=True, sections=sections, checksums={k: checksum(v) for k, v in sections.items()})
    await ingest.on_inventory(conn, msg)
    ack = conn.sent[-1]
    assert isinstance(ack, InventoryAck) and ack.in_reply_to == msg.id
    assert not isinstance(ack.rejected, msgspec.UnsetType)
    assert [(r.section, r.code) for r in ack.rejected] == [("gadgets", "unknown_section"), ("os", "invalid")]
    assert ack.checksums == {"identity": checksum({"hostname": "pc-2"}), "os": stored_os,
                             "security": checksum(INVENTORY["security"])}
    inv = await inventory_store.get_inventory(db, dev)
    assert inv["identity"] == {"hostname": "pc-2"} and inv["os"] == INVENTORY["os"]
    delta = InventoryReport(full=False, sections={"identity": {"hostname": "pc-3"}},
                            checksums={**ack.checksums, "identity": checksum({"hostname": "pc-3"})})
    await ingest.on_inventory(conn, delta)
    assert isinstance(conn.sent[-1], InventoryAck) and conn.sent[-1].rejected is msgspec.UNSET
    assert (await inventory_store.get_inventory(db, dev))["identity"] == {"hostname": "pc-3"}


# --- end to end: real server, real mTLS ---------------------------------------------------------


@asynccontextmanager
async def raw_agent(state: AgentState, capabilities: list[str]) -> AsyncIterator[ClientConnection]:
    """The device's own mTLS control channel, driven message by message."""
    ctx = tls.agent_client_context(state.ca_path, state.cert_path, state.key_path)
    async with connect(state.agent_url, ssl=ctx, max_size=limits.MAX_CONTROL_MESSAGE_BYTES) as ws:
        await ws.send(codec.encode(Hello(min_version=1, max_version=1, agent_version="raw",
                                         device_id=state.device_id, capabilities=capabilities)))
        assert isinstance(codec.decode(await asyncio.wait_for(ws.recv(), 20)), Welcome)
        yield ws


async def _reply(ws: ClientConnection, message: Message) -> tuple[str, float]:
    """Send and return the raw reply naming it and how long it took."""
    started = time.monotonic()
    await ws.send(codec.encode(message))
    while True:
        raw = await asyncio.wait_for(ws.recv(), 30)
        assert isinstance(raw, str)
        if json.loads(raw).get("in_reply_to") == message.id:
            return raw, time.monotonic() - started


async def test_server_names_refused_samples_and_the_stream_goes_on(tmp_path: Path) -> None:
    """Over real mTLS: a batch with an oversized and a wrongly typed sample among good ones is acked at once
    naming both; the next batch is acked at once; an older agent's ack has no 'rejected' on the wire."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        async with raw_agent(state, ["health", "health.seq", "health.partial"]) as ws:
            raw, took = await _reply(ws, _batch([good(1), oversized(), good(3), WRONG_TYPES, good(5)]))
            ack = codec.decode(raw)
            assert isinstance(ack, HealthAck) and ack.up_to == 5 and took < AT_ONCE_S
            assert not isinstance(ack.rejected, msgspec.UnsetType)
            assert [(r.seq, r.code) for r in ack.rejected] == [(2, "too_large"), (4, "invalid")]
            raw, took = await _reply(ws, _batch([good(6), good(7)], first=6))
            assert isinstance(codec.decode(raw), HealthAck) and took < AT_ONCE_S
        async with raw_agent(state, ["health", "health.seq"]) as ws:
            raw, _ = await _reply(ws, _batch([good(8), WRONG_TYPES], first=8))
            assert "rejected" not in raw and json.loads(raw)["up_to"] == 9
        assert await health_store.seqs(server.db, state.device_id) == [1, 3, 5, 6, 7, 8]


@pytest.fixture
def agent_processes() -> Any:
    """Agent subprocesses started by a test; killed by PID at the end whatever happens."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def _stored(server: Any, device_id: str) -> dict[int, dict[str, Any]]:
    rows = await server.db.fetchall("SELECT seq, metrics FROM health_samples WHERE device_id = ? ORDER BY seq",
                                    (device_id,))
    return {int(r["seq"]): json.loads(r["metrics"]) for r in rows}


async def test_real_agent_delivers_past_bad_samples(tmp_path: Path, agent_processes: list[Any],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A real agent process whose outbox holds, among 30 good samples, one oversized (written by an older
    agent), one wrongly typed and one that does not even decode: the oversized one is trimmed before sending
    and stored marked 'truncated' (its nearly full root kept), the wrongly typed one is refused by the server
    and deleted by the agent, the undecodable one is isolated by bisection and deleted; every good one is
    stored, the whole backlog within seconds (never a 30 s ack timeout), both ends log the reasons, and the
    agent's next samples report the refusals."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        box = Outbox(state.outbox_path, max_items=10_000)
        bodies = [good(i) for i in range(30)]
        bodies[5], bodies[14], bodies[23] = oversized(), WRONG_TYPES, UNDECODABLE
        seqs = [box.add("health", body, time.time() - 300 + i) for i, body in enumerate(bodies)]
        box.close()
        big, wrong, broken = seqs[5], seqs[14], seqs[23]
        config_file = tmp_path / "agent.toml"
        config_file.write_text("[agent]\nhealth_interval_s = 0.5\nbackoff_cap_s = 0.5\ninventory_interval_s = 3600\n")
        log = tmp_path / "agent.log"
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="server.cmdb"):
            with log.open("ab") as out:  # the child keeps its own copy of the descriptor
                proc = subprocess.Popen([sys.executable, "-m", "helpline", "agent", "run", "--state",
                                         str(state.directory), "--config", str(config_file)], cwd=REPO, stdout=out,
                                        stderr=subprocess.STDOUT)
            agent_processes.append(proc)
            expected = set(seqs) - {wrong, broken}

            async def backlog_in() -> bool:
                return expected <= set(await _stored(server, state.device_id))

            await wait_until(backlog_in, timeout=60, what="the backlog stored past the bad samples")
            took = time.monotonic() - started

            async def reported() -> bool:
                later = [m for s, m in (await _stored(server, state.device_id)).items() if s > seqs[-1]]
                return any(m.get("delivery", {}).get("rejected") == 2 for m in later)

            await wait_until(reported, timeout=30, what="a live sample reporting the two refusals")
        stored = await _stored(server, state.device_id)
        assert wrong not in stored and broken not in stored
        trimmed = stored[big]
        assert trimmed["truncated"]["disks_dropped"] > 0 and trimmed["disks"]["/"] == 4.0
        assert len(json.dumps(trimmed, separators=(",", ":"))) <= LIMIT
        # Agent start, TLS, enrollment check and a full inventory included; each 30 s timeout would show.
        assert took < 2 * AT_ONCE_S, f"backlog took {took:.1f}s"
        refused = [r for r in caplog.records if r.getMessage() == "health samples refused"]
        assert refused and all(getattr(r, "device_id") == state.device_id for r in refused)
        assert any("cpu_percent must be a number" in s for r in refused for s in getattr(r, "samples"))
        text = log.read_text()
        assert "server refused health samples; deleted" in text and "cpu_percent must be a number" in text
        assert "server refused a health sample; deleted" in text and f"seq={broken}" in text
        assert "pending health sample over the size limit; trimmed before sending" in text


@functools.lru_cache(maxsize=1)
def _real_inventory() -> dict[str, Any]:
    return collect_inventory()


async def test_bad_inventory_section_stored_around_and_not_resent(tmp_path: Path) -> None:
    """A real agent whose 'displays' section breaks the schema: the server stores every other section and
    names 'displays'; the agent does not send it again while it is unchanged (the periodic check sends
    nothing, no full-report loop) and sends it as soon as it is fixed; health flows meanwhile."""
    inv = copy.deepcopy(_real_inventory())
    inv["displays"] = {"monitors": [{"index": 1, "width": "wide"}]}
    sent: list[Message] = []

    def setup(agent: Agent) -> None:
        agent.reporter.collect = lambda: copy.deepcopy(inv)
        original = agent.client.send

        async def spy(message: Message) -> None:
            sent.append(message)
            await original(message)

        agent.client.send = spy  # type: ignore[method-assign]

    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        cfg = AgentConfig(state_dir=state.directory, backoff_cap_s=0.5, health_interval_s=0.2,
                          inventory_interval_s=3600.0)
        async with running_agent(state, cfg, setup=setup) as agent:
            reporter = agent.reporter

            async def others_stored() -> bool:
                held = await inventory_store.stored_checksums(server.db, state.device_id) or {}
                want = {k: v for k, v in section_checksums(inv).items() if k != "displays"}
                return held == want

            await wait_until(others_stored, timeout=30, what="every good section stored")

            def refusal_recorded() -> bool:  # the agent writes it once the ack has reached it
                acked = reporter.load_acked()
                return acked is not None and set(acked.rejected) == {"displays"}

            await wait_until(refusal_recorded, timeout=AT_ONCE_S, what="the agent recording the refusal")
            await wait_until(lambda: _health_count(server, state.device_id, 3), timeout=AT_ONCE_S,
                             what="health flowing")
            reports = len([m for m in sent if isinstance(m, InventoryReport)])
            assert await reporter.send_inventory()  # the periodic check: nothing changed, nothing sent
            assert len([m for m in sent if isinstance(m, InventoryReport)]) == reports
            inv["displays"] = {"monitors": []}
            assert await reporter.send_inventory()
            last = [m for m in sent if isinstance(m, InventoryReport)][-1]
            assert not last.full and set(last.sections) == {"displays"}
            held = await inventory_store.stored_checksums(server.db, state.device_id)
            assert held == section_checksums(inv)
            acked = reporter.load_acked()
            assert acked is not None and acked.rejected == {}
            await reporter.stop()


async def _health_count(server: Any, device_id: str, n: int) -> bool:
    return len(await health_store.seqs(server.db, device_id)) >= n


async def test_error_reply_wakes_the_waiting_batch_at_once(tmp_path: Path) -> None:
    """The server answers a batch with an 'internal' error (database trouble): the agent is woken by it,
    not by its 30 s ack timeout, sends the same batch again within seconds and loses nothing."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        refused_at: list[float] = []
        sent_again = asyncio.Event()

        async def trouble_once(conn: Any, msg: HealthBatch) -> None:
            if not refused_at:
                refused_at.append(time.monotonic())
                await conn.reply_error("internal", "the server could not process this message", msg.id)
                return
            sent_again.set()
            await normal(conn, msg)

        normal = server.agent_handlers.replace(HealthBatch, trouble_once)
        cfg = AgentConfig(state_dir=state.directory, backoff_cap_s=0.5, health_interval_s=3600.0,
                          inventory_interval_s=3600.0)
        box = Outbox(state.outbox_path, max_items=100)
        seqs = [box.add("health", good(i), time.time()) for i in range(10)]
        box.close()
        async with running_agent(state, cfg) as agent:
            await asyncio.wait_for(sent_again.wait(), 60)
            assert time.monotonic() - refused_at[0] < AT_ONCE_S
            await wait_until(lambda: agent.reporter.outbox.count("health") <= 1, timeout=AT_ONCE_S,
                             what="backlog acknowledged")
            stored = await health_store.seqs(server.db, state.device_id)
            assert set(seqs) <= set(stored)
            assert agent.reporter.outbox.rejected_total("health") == 0
            await agent.reporter.stop()


async def test_gaps_refused_alone_do_not_block_the_samples(tmp_path: Path) -> None:
    """A server that refuses the batch's gap report (as a content error) gets the gaps alone next, refuses
    them again and the agent gives them up with a log line; every sample is still delivered."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")

        async def no_gaps(conn: Any, msg: HealthBatch) -> None:
            if msg.gaps:
                await conn.reply_error("invalid", "gap report refused", msg.id)
                return
            await normal(conn, msg)

        normal = server.agent_handlers.replace(HealthBatch, no_gaps)
        box = Outbox(state.outbox_path, max_items=5)
        for i in range(8):  # three dropped to the bound: one gap
            box.add("health", good(i), time.time())
        assert len(box.gaps("health")) == 1
        kept = [i.seq for i in box.pending("health", 10)]
        box.close()
        cfg = AgentConfig(state_dir=state.directory, backoff_cap_s=0.5, health_interval_s=3600.0,
                          inventory_interval_s=3600.0)
        async with running_agent(state, cfg) as agent:
            outbox = agent.reporter.outbox
            await wait_until(lambda: outbox.count("health") == 0 and not outbox.gaps("health"),
                             timeout=AT_ONCE_S, what="samples delivered, gaps given up")
            stored = await health_store.seqs(server.db, state.device_id)
            assert stored[:len(kept)] == kept and not await health_store.gaps_of(server.db, state.device_id)
            await agent.reporter.stop()


def test_health_sample_constructor_accepts_what_decode_refuses() -> None:
    """Why bisection is needed at all: the agent can build a sample the server cannot decode (a metrics key
    over 64 characters), so the server's only answer is an 'error' for the whole batch."""
    batch = HealthBatch(samples=[HealthSample(seq=1, ts=1.0, metrics=UNDECODABLE)], gaps=[HealthGap(
        from_seq=0, to_seq=0, dropped=1)])
    with pytest.raises(InvalidMessage) as caught:
        codec.decode(codec.encode(batch))
    assert caught.value.in_reply_to == batch.id
