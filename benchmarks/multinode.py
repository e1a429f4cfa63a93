"""Three server nodes on one PostgreSQL and one nats-server, a simulated fleet across them.

Usage: python benchmarks/multinode.py [--agents 20000] [--workers 4] [--source fleet|nat] [--hold 20]
       [--revocations 50] [--health-agents 1000] [--health-interval 5]

Needs HELPLINE_TEST_PG_URL (or --pg-url; a schema is made for the run and dropped after) and
nats-server. Every part is a real process: nats-server, three ``helpline server`` nodes, and
``--workers`` simulator processes (:mod:`benchmarks.multinode_sim`) holding the agents: real mTLS
websockets, hello and welcome, keepalives, health samples kept until acknowledged, and after a drop
the real agent's backoff before reconnecting to another node. Certificates are issued in-process by
the enrollment's CA code in several processes (:mod:`benchmarks.fleet_certs`). In ``fleet`` mode
(default) each agent connects from its own loopback address, with the server's default caps; ``nat``
puts the whole fleet behind 127.0.0.1. Printed:

* per node: agents held, RSS per agent, CPU while the fleet idles with keepalives;
* event fan-out: a device on node C revoked by a bus member (the code node A runs:
  ``devices.revoke`` on the database wrapped by :class:`server.bus.events.RingingDatabase`) until its
  channel on C is closed, seen by the device — p50/p95 from issuing, from commit, and the revoking
  transaction itself;
* node loss: node C killed (SIGKILL, by PID): how many of its agents are back on A/B within 60 s and
  when all are; the connection events the nodes counted (``helpline_connection_events_total``) and
  why the simulated agents' attempts failed;
* health samples acknowledged by a node and missing from PostgreSQL afterwards (must be 0);
* issue 20's targets, each "met" or "MISSED" with its figure; the exit status is 1 when one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from websockets.exceptions import WebSocketException

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.fleet_certs import enroll, issue  # noqa: E402
from benchmarks.multinode_sim import (  # noqa: E402
    CAUSES,
    DRAINING,
    REPORT,
    SAMPLING,
    Agent,
    Sim,
    source_address,
    worker,
)
from certs.pki import init_pki  # noqa: E402
from helpline.ports import free_port  # noqa: E402
from server import devices  # noqa: E402
from server.bus.connection import connect as bus_connect  # noqa: E402
from server.bus.events import RingingDatabase  # noqa: E402
from server.config import ServerConfig  # noqa: E402
from server.store import open_database  # noqa: E402

NODES = 3


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def held(counts: Any, workers: int) -> list[int]:
    return [sum(counts[w * NODES + n] for w in range(workers)) for n in range(NODES)]


async def wait_ports(ports: list[int], procs: list[subprocess.Popen[bytes]], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for port, proc in zip(ports, procs, strict=True):
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"process {proc.pid} not listening on {port}") from None
                await asyncio.sleep(0.1)


def stop(proc: subprocess.Popen[bytes] | BaseProcess, sig: int = signal.SIGTERM) -> None:
    """End a process we started, by its PID; SIGKILL after 10 s."""
    pid = proc.pid
    if pid is None:
        return
    alive = (proc.poll() is None) if isinstance(proc, subprocess.Popen) else proc.is_alive()
    if alive:
        os.kill(pid, sig)
    if isinstance(proc, subprocess.Popen):
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
            proc.wait()
    else:
        proc.join(10)
        if proc.is_alive():
            os.kill(pid, signal.SIGKILL)
            proc.join()


class TimedDatabase:
    """A database whose transactions record how long each statement and the commit took (by statement
    kind), to say where a revocation's time goes before the ring."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dialect = inner.dialect
        self.url = inner.url
        self.times: dict[str, list[float]] = {}

    def _note(self, what: str, started: float) -> None:
        self.times.setdefault(what, []).append((time.perf_counter() - started) * 1000)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        started = time.perf_counter()
        async with self.inner.transaction() as tx:
            self._note("begin", started)
            yield _TimedTransaction(tx, self)
            committing = time.perf_counter()
        self._note("commit", committing)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _TimedTransaction:
    def __init__(self, tx: Any, owner: TimedDatabase) -> None:
        self._tx, self._owner = tx, owner
        self.dialect = tx.dialect

    async def _timed(self, method: str, sql: str, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return await getattr(self._tx, method)(sql, *args)
        finally:
            self._owner._note(" ".join(sql.split()[:3])[:40], started)

    async def execute(self, sql: str, *args: Any) -> Any:
        return await self._timed("execute", sql, *args)

    async def fetchone(self, sql: str, *args: Any) -> Any:
        return await self._timed("fetchone", sql, *args)

    async def fetchall(self, sql: str, *args: Any) -> Any:
        return await self._timed("fetchall", sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


def scrape_events(port: int) -> dict[str, float]:
    """A node's ``helpline_connection_events_total`` by kind (empty if the node is gone)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("helpline_connection_events_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            found[kind] = float(line.rsplit(" ", 1)[1])
    return found


def pct(figures: list[float], p: float) -> float:
    figures = sorted(figures)
    return figures[max(0, int(len(figures) * p) - 1)]


def spread(label: str, figures: list[float]) -> str:
    if not figures:
        return f"{label:30} none measured"
    return (f"{label:30} p50 {statistics.median(figures):.1f} ms, p95 {pct(figures, 0.95):.1f} ms, "
            f"max {max(figures):.1f} ms")


#: Issue 20's fan-out target: a revocation issued on node A closes the device's channel on node C within this, p95.
FANOUT_P95_MS = 50.0


async def run(args: argparse.Namespace) -> bool:
    """The whole benchmark; True when every target it checks is met."""
    pg_url = args.pg_url or os.environ.get("HELPLINE_TEST_PG_URL", "")
    if not pg_url:
        raise SystemExit("needs PostgreSQL: --pg-url or HELPLINE_TEST_PG_URL")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # stopped by PID: clean up
    data = Path(tempfile.mkdtemp(prefix="helpline-multinode-"))
    schema = f"hl_bench_{os.getpid()}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(pg_url)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    db_url = f"{pg_url}{'&' if '?' in pg_url else '?'}search_path={schema}"
    procs: list[subprocess.Popen[bytes]] = []
    workers: list[BaseProcess] = []
    load_start = os.getloadavg()
    try:
        init_pki(data / "pki", ["localhost", "127.0.0.1"])
        nats_port = free_port()
        nats = subprocess.Popen([shutil.which("nats-server") or "/usr/sbin/nats-server", "-a", "127.0.0.1",
                                 "-p", str(nats_port), "-js", "-sd", str(data / "js")],
                                stdout=subprocess.DEVNULL, stderr=(data / "nats.log").open("wb"))
        procs.append(nats)
        nats_url = f"nats://127.0.0.1:{nats_port}"
        print(f"issuing {args.agents + args.revocations} device certificates in {args.issuers} processes …",
              flush=True)
        t0 = time.perf_counter()
        db = await open_database(db_url)  # the schema, before the nodes race to migrate it
        ids = [f"sim-{i:06d}" for i in range(args.agents)] + [f"fan-{i:04d}" for i in range(args.revocations)]
        issued = issue(data / "pki", data / "sim", ids, args.issuers)
        signed_s = time.perf_counter() - t0
        await enroll(db, issued)
        await db.close()
        issue_s = time.perf_counter() - t0
        print(f"  {issue_s:.1f} s ({signed_s:.1f} s keys and certificates, the rest the devices' rows)", flush=True)
        fleet, probes = issued[:args.agents], issued[args.agents:]
        nat = args.source == "nat"
        sims = [Sim(one.device_id, one.cert, one.key, "" if nat else source_address(i), i < args.health_agents)
                for i, one in enumerate(fleet)]
        agent_ports, console_ports = [free_port() for _ in range(NODES)], [free_port() for _ in range(NODES)]
        metrics_ports = [free_port() for _ in range(NODES)]
        # The keys every node of a deployment shares (support-code pepper, ticket and storage keys): made for
        # the first node with ``helpline admin keys init``, copied to the others, as the README says.
        keys = data / "keys"
        made = subprocess.run([sys.executable, "-m", "helpline", "admin", "keys", "init", "--data", str(keys)],
                              capture_output=True, env=dict(os.environ, HELPLINE_DATABASE_URL=db_url))
        if made.returncode == 0:
            for i in range(NODES):
                shutil.copytree(keys, data / f"node{i}")
        elif b"invalid choice" not in made.stderr:  # a version without shared keys needs none
            raise RuntimeError(f"helpline admin keys init failed: {made.stderr.decode(errors='replace')}")
        nodes: list[subprocess.Popen[bytes]] = []
        for i in range(NODES):
            env = dict(os.environ, HELPLINE_DATABASE_URL=db_url, HELPLINE_NATS_URL=nats_url,
                       HELPLINE_NODE_ID=f"node-{'abc'[i]}", HELPLINE_PKI_DIR=str(data / "pki"),
                       HELPLINE_SUPPORT_CODES_NODES=str(NODES),  # a bus with nodes = 1 is refused
                       HELPLINE_KEEPALIVE_S=str(args.keepalive), HELPLINE_LOG_LEVEL="warning",
                       HELPLINE_METRICS_LISTEN=f"127.0.0.1:{metrics_ports[i]}")
            if args.per_address:
                env["HELPLINE_MAX_UNAUTHENTICATED_PER_ADDRESS"] = str(args.per_address)
            nodes.append(subprocess.Popen(
                [sys.executable, "-m", "helpline", "server", "--data", str(data / f"node{i}"), "--host", "127.0.0.1",
                 "--agent-port", str(agent_ports[i]), "--console-port", str(console_ports[i])],
                stdout=subprocess.DEVNULL, stderr=(data / f"node{i}.log").open("wb"), env=env))
        procs.extend(nodes)
        await wait_ports([nats_port, *agent_ports], [nats, *nodes])
        rss0 = [rss(p.pid) for p in nodes]
        urls = [f"wss://127.0.0.1:{p}/agent" for p in agent_ports]
        ca = str(data / "pki" / "ca.pem")
        ctx = mp.get_context("spawn")
        counts: Any = ctx.Array("i", args.workers * NODES, lock=False)
        causes: Any = ctx.Array("i", args.workers * len(CAUSES), lock=False)
        reported: Any = ctx.Array("i", args.workers, lock=False)
        phase: Any = ctx.Value("i", 0, lock=False)
        killed: Any = ctx.Value("i", 0, lock=False)
        back: Any = ctx.Array("i", args.workers, lock=False)
        print(f"connecting {args.agents} agents from {args.workers} simulator processes "
              f"({'one address' if nat else 'one loopback address each'}) …", flush=True)
        t0 = time.perf_counter()
        for w in range(args.workers):
            p = ctx.Process(target=worker, args=(sims[w::args.workers], ca, urls, counts, causes, phase, reported,
                                                 killed, back, w,
                                                 args.keepalive, args.health_interval, args.concurrency,
                                                 str(data / f"acked-{w}.json")), daemon=True)
            p.start()
            workers.append(p)
        deadline = time.monotonic() + args.connect_timeout
        next_note = time.monotonic() + 30
        history: list[tuple[float, int]] = []
        while (connected := sum(held(counts, args.workers))) < args.agents:
            now = time.monotonic()
            history.append((now, connected))
            earlier = [c for t, c in history if now - t >= args.settle]
            if now > deadline or (earlier and connected - earlier[-1] < 0.01 * connected):
                print(f"  {connected} of {args.agents} connected, less than 1 % more in the last {args.settle:.0f} s: "
                      "the fleet is what connected (the others stop trying)", flush=True)
                break
            if time.monotonic() > next_note:
                print(f"  {sum(held(counts, args.workers))} after {time.perf_counter() - t0:.0f} s; failed attempts: "
                      f"{fmt(failure_counts(causes, args.workers))}; load {os.getloadavg()[0]:.1f}", flush=True)
                next_note += 30
            await asyncio.sleep(0.2)
        connect_s = time.perf_counter() - t0
        fleet_size = sum(held(counts, args.workers))
        failures_connect = failure_counts(causes, args.workers)
        phase.value = SAMPLING
        print(f"  {fleet_size} connected in {connect_s:.1f} s; holding {args.hold:.0f} s idle "
              f"(keepalive {args.keepalive:g} s; {args.health_agents} agents send a health sample every "
              f"{args.health_interval:g} s) …", flush=True)
        cpu0, w0 = [cpu(p.pid) for p in nodes], time.perf_counter()
        await asyncio.sleep(args.hold)
        cpu1, wall = [cpu(p.pid) for p in nodes], time.perf_counter() - w0
        per_node = held(counts, args.workers)
        rss1 = [rss(p.pid) for p in nodes]

        # Fan-out: probes on node C, revoked by a bus member, closed as the device sees it.
        bus = await bus_connect(ServerConfig(nats_url=nats_url, node_id="bench"))
        assert bus is not None
        timed = TimedDatabase(await open_database(db_url))
        db = RingingDatabase(timed, bus)  # type: ignore[arg-type]
        fanout: list[float] = []
        after_commit: list[float] = []
        transaction: list[float] = []
        probe_failures: dict[str, int] = {}
        for one in probes:
            try:  # node C may be slow to welcome on a loaded machine: a probe that cannot connect is skipped
                ws = await Agent(Sim(one.device_id, one.cert, one.key, "", False), ca).hello(urls[2])
            except (OSError, TimeoutError, WebSocketException, RuntimeError) as exc:
                probe_failures[f"connect {type(exc).__name__}"] = probe_failures.get(f"connect {type(exc).__name__}", 0) + 1
                continue
            started = time.perf_counter()
            assert await devices.revoke(db, one.device_id, actor="bench")  # type: ignore[arg-type]
            committed = time.perf_counter()
            try:
                await asyncio.wait_for(ws.wait_closed(), 10)
            except TimeoutError:
                probe_failures["not closed within 10 s"] = probe_failures.get("not closed within 10 s", 0) + 1
                await ws.close()
                continue
            closed = time.perf_counter()
            fanout.append((closed - started) * 1000)
            after_commit.append((closed - committed) * 1000)
            transaction.append((committed - started) * 1000)
        await db.close()
        await bus.close()
        if fanout:
            print("  fan-out " + spread("issued -> closed", fanout) + "; " + spread("committed -> closed", after_commit)
                  + f"; probes failed: {fmt(probe_failures)}", flush=True)

        # Node loss: C killed; its agents back on A and B.
        events_before = [scrape_events(port) for port in metrics_ports]
        causes_before = failure_counts(causes, args.workers)
        lost = held(counts, args.workers)[2]
        t0 = time.perf_counter()
        killed.value = 1
        stop(nodes[2], signal.SIGKILL)
        deadline = time.monotonic() + args.recovery_timeout
        recovered: float | None = None
        back_in_60: int | None = None
        cpu_k0 = [cpu(p.pid) for p in nodes[:2]]
        sim_pids = [w.pid for w in workers if w.pid is not None]
        cpu_s0 = [cpu(pid) for pid in sim_pids]
        spies = profile([nodes[0].pid, sim_pids[0]], ["node-a", "sim-0"], data, args.pyspy) if args.pyspy else []
        while time.monotonic() < deadline:
            returned = sum(back[w] for w in range(args.workers))
            elapsed = time.perf_counter() - t0
            if back_in_60 is None and elapsed >= 60:
                back_in_60 = returned
            if returned >= lost:
                recovered = elapsed
                break
            await asyncio.sleep(0.2)
        cpu_k1, kill_wall = [cpu(p.pid) for p in nodes[:2]], time.perf_counter() - t0
        cpu_s1 = [cpu(pid) for pid in sim_pids]
        profiles = [finish_profile(spy, out) for spy, out in spies]
        if back_in_60 is None and recovered is not None:
            back_in_60 = lost
        after = held(counts, args.workers)
        print(f"  node C killed: {lost} agents, {back_in_60} back within 60 s, all back: "
              f"{'no' if recovered is None else f'{recovered:.1f} s'}; now {after}", flush=True)
        events_after = [scrape_events(port) for port in metrics_ports[:2]]
        causes_kill = {k: v - causes_before[k] for k, v in failure_counts(causes, args.workers).items()}

        # Health samples: stop sampling, let the outboxes drain, then compare what was acknowledged with the database.
        await asyncio.sleep(2 * args.health_interval)
        phase.value = DRAINING
        await asyncio.sleep(max(10.0, 2 * args.health_interval))
        phase.value = REPORT
        until = time.monotonic() + 60
        while sum(reported[w] for w in range(args.workers)) < args.workers and time.monotonic() < until:
            await asyncio.sleep(0.2)
        acked: dict[str, int] = {}
        pending = 0
        attempts: list[list[Any]] = []
        returns: list[list[float]] = []
        others: dict[str, int] = {}
        for w in range(args.workers):
            report = json.loads((data / f"acked-{w}.json").read_text())
            acked.update(report["acked"])
            pending += report["pending"]
            attempts.extend(report["attempts"])
            returns.extend(report["returns"])
            for what, n in report.get("others", {}).items():
                others[what] = others.get(what, 0) + n
        check = await asyncpg.connect(pg_url)
        rows = await check.fetch(f"SELECT device_id, seq FROM {schema}.health_samples")
        await check.close()
        stored: dict[str, set[int]] = {}
        for row in rows:
            stored.setdefault(row["device_id"], set()).add(int(row["seq"]))
        acked_total = sum(acked.values())
        missing = sum(1 for device, up_to in acked.items() for seq in range(1, up_to + 1)
                      if seq not in stored.get(device, ()))

        load_end = os.getloadavg()
        print()
        print(f"machine                {os.cpu_count()} cores, load average {load_start[0]:.1f} at the start, "
              f"{load_end[0]:.1f} at the end (1 min; 5 min {load_end[1]:.1f}); nodes, nats-server, PostgreSQL, "
              f"{args.workers} simulator processes and other work share it")
        print(f"certificates           {len(issued)} issued and enrolled in {issue_s:.1f} s "
              f"({args.issuers} processes; keys and certificates {signed_s:.1f} s)")
        print(f"agents                 {fleet_size} of {args.agents} connected in {connect_s:.1f} s "
              f"({'one source address (nat)' if nat else 'a loopback address each'}); failed attempts on the way: "
              f"{fmt(failures_connect)}")
        for i in range(NODES):
            print(f"node {'abc'[i]}                 {per_node[i]} agents, RSS {rss0[i] / 2**20:.0f} -> "
                  f"{rss1[i] / 2**20:.0f} MiB = {(rss1[i] - rss0[i]) / max(1, per_node[i]) / 1024:.1f} KiB/agent, "
                  f"CPU idle fleet {100 * (cpu1[i] - cpu0[i]) / wall:.1f} % of a core")
        print(f"fan-out ({len(fanout)} devices on node C; revoked on PostgreSQL through node A's code, ring over NATS; "
              f"probes failed: {fmt(probe_failures)})")
        print("  " + spread("issued -> closed", fanout))
        print("  " + spread("committed -> closed", after_commit))
        print("  " + spread("the revoke transaction + ring", transaction))
        for what, figures in timed.times.items():
            print("    " + spread(what, figures))
        if recovered is None:
            print(f"node C killed          {lost} agents; {back_in_60} back within 60 s; NOT all back within "
                  f"{args.recovery_timeout:.0f} s: {after}")
        else:
            print(f"node C killed          {lost} agents: {back_in_60} back on A/B within 60 s, all in {recovered:.1f} s "
                  f"-> now {after[0]} on A, {after[1]} on B")
        print("  CPU of A and B while their agents came back: "
              + ", ".join(f"{100 * (b - a) / kill_wall:.0f} %" for a, b in zip(cpu_k0, cpu_k1, strict=True))
              + " of a core; of the simulators: "
              + ", ".join(f"{100 * (b - a) / kill_wall:.0f} %" for a, b in zip(cpu_s0, cpu_s1, strict=True)))
        for line in recovery_report(attempts, returns):
            print("  " + line)
        for name, top in profiles:
            print(f"  py-spy {name} (self time, top frames): {top}")
        print(f"  failed attempts (simulators): {fmt(causes_kill)}")
        for i in range(2):
            delta = {k: v - events_before[i].get(k, 0) for k, v in events_after[i].items()}
            print(f"  node {'ab'[i]} connection events: {fmt({k: int(v) for k, v in delta.items() if v})}")
        print(f"  node c connection events before the kill: {fmt({k: int(v) for k, v in events_before[2].items()})}")
        if others:
            print(f"  'other' failures (simulators, whole run): {fmt(others)}")
        print(f"health samples         {acked_total} acknowledged by the nodes ({len(acked)} agents), {missing} of them "
              f"missing from PostgreSQL; {pending} still unacknowledged in the outboxes at the end")
        fanout_p95 = pct(fanout, 0.95) if fanout else float("inf")
        verdicts = [
            (f"all {args.agents} agents connected", fleet_size >= args.agents, f"{fleet_size}"),
            ("node C killed: all its agents back within 60 s", recovered is not None and recovered <= 60,
             f"{back_in_60} of {lost} within 60 s" + ("" if recovered is None else f", all in {recovered:.1f} s")),
            ("no acknowledged health sample lost", missing == 0, f"{missing} missing of {acked_total}"),
            ("fan-out issued -> closed p95 <= 50 ms", fanout_p95 <= FANOUT_P95_MS, f"p95 {fanout_p95:.1f} ms"),
        ]
        print("targets (issue 20; cross-node typing: benchmarks/multinode_typing.py)")
        for what, met, figure in verdicts:
            print(f"  {what:48} {'met' if met else 'MISSED'} ({figure})")
        return all(met for _, met, _ in verdicts)
    except BaseException:
        for i in range(NODES):
            log = data / f"node{i}.log"
            if log.exists():
                print(f"--- node {'abc'[i]} log (tail)\n{log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
        raise
    finally:
        for simulator in workers:
            stop(simulator)
        for proc in reversed(procs):
            stop(proc)
        conn = await asyncpg.connect(pg_url)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
        shutil.rmtree(data, ignore_errors=True)


def recovery_report(attempts: list[list[Any]], returns: list[list[float]]) -> list[str]:
    """Where the killed node's agents spent the recovery: their attempts' steps and outcomes by backoff
    step, and how much of each agent's time to return was backoff sleep."""
    lines = [f"attempts by the killed node's agents: {len(attempts)} "
             f"({fmt(count(str(a[3]) for a in attempts))}); by backoff step: "
             f"{fmt(count(f'#{a[2]} {a[3]}' for a in attempts))}"]
    for i, step in enumerate(("gate wait", "TCP connect", "TLS handshake", "websocket upgrade", "hello -> welcome")):
        ok = [float(a[4 + i]) for a in attempts if a[3] == "ok" and float(a[4 + i]) >= 0]
        if ok:
            lines.append(spread(f"  {step} (successful attempts)", ok))
    failed = [a for a in attempts if a[3] != "ok"]
    if failed:
        reached = count(("welcome" if a[8] >= 0 else "ws" if a[7] >= 0 else "tls" if a[6] >= 0 else
                         "tcp" if a[5] >= 0 else "gate" if a[4] >= 0 else "none") for a in failed)
        lines.append(f"failed attempts ended after step: {fmt(reached)}")
    back = sorted(r for r in returns if r[0] >= 0)
    if back:
        slept = [r[1] for r in back]
        late = [r for r in back if r[0] > 60]
        lines.append(f"returns: {len(back)} agents, median {statistics.median(r[0] for r in back):.1f} s after the "
                     f"kill, of it median {statistics.median(slept):.1f} s in backoff; returned after 60 s: {len(late)}"
                     + (f", they slept {statistics.median(r[1] for r in late):.1f} s of "
                        f"{statistics.median(r[0] for r in late):.1f} s (medians)" if late else ""))
        per_10 = count(f"{int(r[0] // 10) * 10:03d}-{int(r[0] // 10) * 10 + 10} s" for r in back)
        lines.append(f"returns per 10 s: {fmt(per_10)}")
    return lines


def count(items: Any) -> dict[str, int]:
    found: dict[str, int] = {}
    for item in items:
        found[item] = found.get(item, 0) + 1
    return found


def profile(pids: list[int], names: list[str], data: Path, seconds: float) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """py-spy sampling each of ``pids`` for ``seconds`` (collapsed stacks), started now."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    started = []
    for pid, name in zip(pids, names, strict=True):
        out = data / f"pyspy-{name}.txt"
        proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "50",
                                 "--nonblocking", "--format", "raw", "--output", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append((proc, out))
    return started


def finish_profile(proc: subprocess.Popen[bytes], out: Path) -> tuple[str, str]:
    """The profile's name and its top self-time frames (waits for py-spy to end)."""
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        stop(proc)
    frames: dict[str, int] = {}
    total = 0
    if out.exists():
        for line in out.read_text(errors="replace").splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            leaf = stack.rsplit(";", 1)[-1]
            frames[leaf] = frames.get(leaf, 0) + int(n)
            total += int(n)
    top = sorted(frames.items(), key=lambda kv: -kv[1])[:8]
    return out.stem, "; ".join(f"{100 * n / max(1, total):.0f} % {leaf[:90]}" for leaf, n in top) or "no samples"


def failure_counts(causes: Any, workers: int) -> dict[str, int]:
    return {c: sum(causes[w * len(CAUSES) + i] for w in range(workers)) for i, c in enumerate(CAUSES)}


def fmt(counts: dict[str, Any]) -> str:
    shown = {k: v for k, v in counts.items() if v}
    return ", ".join(f"{k} {v}" for k, v in sorted(shown.items())) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=4, help="simulator processes")
    parser.add_argument("--issuers", type=int, default=os.cpu_count() or 2, help="certificate-signing processes")
    parser.add_argument("--source", choices=("fleet", "nat"), default="fleet",
                        help="fleet: a loopback address per agent; nat: all from 127.0.0.1")
    parser.add_argument("--per-address", type=int, default=0,
                        help="the nodes' max_unauthenticated_per_address (0: the default, 64)")
    parser.add_argument("--concurrency", type=int, default=32, help="handshakes in flight per simulator process")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds of idle fleet for the CPU figure")
    parser.add_argument("--keepalive", type=float, default=20.0, help="keepalive interval (s), the default")
    parser.add_argument("--revocations", type=int, default=50, help="devices revoked for the fan-out figure")
    parser.add_argument("--health-agents", type=int, default=500, help="agents that send health samples")
    parser.add_argument("--health-interval", type=float, default=10.0, help="seconds between their samples")
    parser.add_argument("--connect-timeout", type=float, default=1800.0)
    parser.add_argument("--settle", type=float, default=120.0,
                        help="go on with the agents connected when less than 1 %% more connected in this many seconds")
    parser.add_argument("--recovery-timeout", type=float, default=180.0)
    parser.add_argument("--pyspy", type=float, default=0.0,
                        help="profile node A and simulator 0 with py-spy for this many seconds after the kill")
    parser.add_argument("--pg-url", default="")
    if not asyncio.run(run(parser.parse_args())):
        sys.exit(1)


if __name__ == "__main__":
    main()
