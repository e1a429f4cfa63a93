"""Cross-node typing latency against the single-node figure, in one run (issue 20's latency target).

Usage: python benchmarks/multinode_typing.py [--rounds 4] [--seconds 8] [--idle-agents 900] [--workers 2]

Three real ``helpline server`` nodes (A, B, C) on one nats-server and a fresh schema of
HELPLINE_TEST_PG_URL's PostgreSQL (or ``--pg-url``; dropped after), a real ``helpline agent run`` on a
1920x1080 Xvfb enrolled on node C, a technician with an API token and an unattended grant approved by
two approvers (:class:`benchmarks.screen.ServerStack`, whose single server becomes node C here), and
optionally ``--idle-agents`` simulated agents spread over the three nodes
(:func:`benchmarks.multinode.worker`: real mTLS, keepalives, the agent's backoff) so the figures are
taken "with the agents connected but idle".

Then, for ``--rounds`` rounds, the typing workload of :func:`benchmarks.screen.typing` (10 keys/s
flipping a probe square; key sent → probe seen in the viewer's framebuffer) on a fresh session
requested **on C** (the device's node: the single-node figure) and one requested **on A** (routed to
C over NATS; the viewer follows the answer's ``node_url``), the order alternating every round so a
drift in machine load falls on both alike. Printed: p50/p95 of each (median over rounds), the
difference, and the time to start a session on each (from the POST: its answer — where the routing hop
is —, the device's challenge seen, the first frame in the viewer).
Exits 1 when the target is missed: cross-node p50 within 2 ms of the single-node p50.
Every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from websockets.exceptions import WebSocketException  # noqa: E402

from agent.viewer import Viewer  # noqa: E402
from benchmarks.connect_agents import SimAgent  # noqa: E402
from benchmarks.fleet_certs import enroll, issue  # noqa: E402
from benchmarks.multinode import stop  # noqa: E402
from benchmarks.screen import (  # noqa: E402
    HEIGHT,
    WIDTH,
    Meters,
    Result,
    ServerStack,
    typing,
    wait_cpu_quiet,
    wait_for_file_text,
)
from certs import tls  # noqa: E402
from helpline.ports import free_port  # noqa: E402
from server.store import open_database  # noqa: E402
from tests.xvfb import XvfbHandle, start_xvfb  # noqa: E402

#: The target: cross-node typing p50 within this of the single-node p50 (ms).
TARGET_MS = 2.0


@dataclass
class Node:
    name: str
    agent_port: int
    console_port: int
    pid: int

    @property
    def console(self) -> str:
        return f"https://localhost:{self.console_port}"


@dataclass
class Starts:
    """Session start times on one path (ms): POST answered, the device's challenge seen, first frame."""

    post: list[float] = field(default_factory=list)
    challenge: list[float] = field(default_factory=list)
    first_frame: list[float] = field(default_factory=list)


class ThreeNodes(ServerStack):
    """:class:`ServerStack` (its server is node C, the agent's) plus nodes A and B on the same bus and database."""

    def __init__(self, workdir: Path, xvfb: XvfbHandle, db_url: str, nats_url: str, idle_agents: int) -> None:
        super().__init__(workdir, xvfb)
        # Everything the CLI and node C read comes from the environment (ServerStack writes the TOML file).
        self.env.update(HELPLINE_DATABASE_URL=db_url, HELPLINE_NATS_URL=nats_url, HELPLINE_NODE_ID="node-c",
                        HELPLINE_SUPPORT_CODES_NODES="3",
                        HELPLINE_MAX_UNAUTHENTICATED_PER_ADDRESS=str(max(64, idle_agents)))
        self.nodes: dict[str, Node] = {}

    def start(self, stack: contextlib.ExitStack) -> None:
        try:
            self._start(stack)
        except (RuntimeError, TimeoutError) as exc:  # the work directory goes with the run: show the logs
            tails = "".join(f"\n--- {log.name}\n{log.read_text(errors='replace')[-2000:]}"
                            for log in sorted(self.workdir.glob("*.log")))
            raise RuntimeError(f"the nodes did not start: {exc}{tails}") from exc

    def _start(self, stack: contextlib.ExitStack) -> None:
        # The keys every node of a deployment shares (support-code pepper, ticket and storage keys): made on
        # the first node (C) with ``helpline admin keys init``, copied to the others, as the README says.
        self.config.write_text(f'[server]\ndata_dir = "{self.workdir / "data"}"\nhost = "127.0.0.1"\n')
        shared: list[Path] = []
        try:
            self.helpline("admin", "keys", "init", "--config", str(self.config))
            shared = [p for p in (self.workdir / "data").iterdir() if p.is_file()]  # all the data dir holds yet
        except RuntimeError as exc:
            if "invalid choice" not in str(exc):  # a version without shared keys needs none
                raise
        super().start(stack)  # PKI, node C, enrollment, technician, grant, the agent on C
        self.nodes["c"] = Node("c", self.agent_port, self.console_port, self.server_pid)
        for name in ("a", "b"):
            agent_port, console_port = free_port(), free_port()
            env = {**self.env, "HELPLINE_AGENT_PORT": str(agent_port), "HELPLINE_CONSOLE_PORT": str(console_port),
                   "HELPLINE_NODE_ID": f"node-{name}", "HELPLINE_PKI_DIR": str(self.pki)}
            log, data = f"node-{name}.log", self.workdir / f"node-{name}"
            data.mkdir(mode=0o700)
            for key in shared:
                shutil.copy2(key, data / key.name)
            proc = self._spawn(stack, ["server", "--config", str(self.config), "--data", str(data)], log, env)
            wait_for_file_text(self.workdir / log, "server listening", proc, 60)
            self.nodes[name] = Node(name, agent_port, console_port, proc.pid)

    @contextlib.asynccontextmanager
    async def session_on(self, entry: str, starts: Starts) -> AsyncIterator[Viewer]:
        """A fresh unattended session requested on node ``entry``; the viewer opens it where ``node_url`` says."""
        headers = {"Authorization": f"Bearer {self.api_token}"}
        ctx = self.ssl_context()
        body = {"mode": "control", "reason": "benchmark", "document_id": self.grant_id}
        t0 = time.perf_counter()
        async with aiohttp.ClientSession(headers=headers) as http:

            async def call(method: str, url: str, payload: Any = None) -> Any:
                async with http.request(method, url, json=payload, ssl=ctx) as response:
                    answer = await response.json(content_type=None)
                    if response.status not in (200, 201):
                        raise RuntimeError(f"{method} {url} refused: {response.status} {answer}")
                    return answer

            session = await call("POST", f"{self.nodes[entry].console}/api/v1/devices/{self.device_id}/sessions", body)
            starts.post.append(1000 * (time.perf_counter() - t0))
            base = str(session.get("node_url") or self.nodes[entry].console)
            if entry != "c" and base != self.nodes["c"].console:
                raise RuntimeError(f"a session asked of node {entry} names {base}, not node C")
            path = f"/api/v1/sessions/{session['session_id']}"
            deadline = time.monotonic() + 30
            while session["challenge"] is None:
                if session["state"] == "ended" or time.monotonic() > deadline:
                    raise RuntimeError(f"no challenge from the device: {session.get('end_reason')}")
                await asyncio.sleep(0.01)  # polling interval, the same on both paths
                session = await call("GET", f"{base}{path}")
            starts.challenge.append(1000 * (time.perf_counter() - t0))
            await call("POST", f"{base}{path}/proof", self.org.proof(session["challenge"]))
        stream = f"wss{base.removeprefix('https')}{session['stream_url']}"
        async with Viewer(stream, ssl_context=ctx, headers={**headers, "Origin": base}) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=30)
            starts.first_frame.append(1000 * (time.perf_counter() - t0))
            yield viewer


async def fresh_schema(pg_url: str) -> tuple[str, str]:
    schema = f"hl_typing_{os.getpid()}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return schema, f"{pg_url}{'&' if '?' in pg_url else '?'}search_path={schema}"


async def drop_schema(pg_url: str, schema: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


def idle_worker(sims: list[tuple[str, str, str]], ca: str, urls: list[str], connected: Any, index: int) -> None:
    """A simulator process: its share of idle agents, a third on each node, until the parent stops it.

    Each is a :class:`benchmarks.connect_agents.SimAgent` (mTLS, hello/welcome, keepalive pings, the real
    agent's backoff after a drop); ``connected[index]`` is how many hold a channel now.
    """

    async def main() -> None:
        agents = [SimAgent(d, tls.agent_client_context(Path(ca), Path(c), Path(k))) for d, c, k in sims]
        gate = asyncio.Semaphore(50)  # first connections in flight

        async def life(agent: SimAgent, url: str) -> None:
            async with gate:
                with contextlib.suppress(OSError, TimeoutError, RuntimeError, ValueError, WebSocketException):
                    await agent.connect(url)  # a failure: keepalive() reconnects with the backoff
            await agent.keepalive(url, float("inf"), 20.0)

        async def count() -> None:
            while True:
                connected[index] = sum(agent.ws is not None for agent in agents)
                await asyncio.sleep(0.2)  # reporting interval

        await asyncio.gather(count(), *(life(a, urls[(i + index) % len(urls)]) for i, a in enumerate(agents)))

    asyncio.run(main())


async def idle_fleet(args: argparse.Namespace, nodes: ThreeNodes, db_url: str, out: Path,
                     workers: list[BaseProcess]) -> None:
    """``--idle-agents`` simulated agents spread over the nodes, connected before any figure is taken."""
    t0 = time.perf_counter()
    issued = issue(nodes.pki, out, [f"idle-{i:06d}" for i in range(args.idle_agents)], args.workers)
    db = await open_database(db_url)
    try:
        await enroll(db, issued)
    finally:
        await db.close()
    sims = [(one.device_id, one.cert, one.key) for one in issued]
    urls = [f"wss://localhost:{nodes.nodes[n].agent_port}/agent" for n in "abc"]
    ctx = mp.get_context("spawn")
    connected: Any = ctx.Array("i", args.workers, lock=False)
    for w in range(args.workers):
        p = ctx.Process(target=idle_worker, args=(sims[w::args.workers], str(nodes.pki / "ca.pem"), urls,
                                                  connected, w), daemon=True)
        p.start()
        workers.append(p)
    deadline = time.monotonic() + args.connect_timeout
    while sum(connected) < args.idle_agents:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {sum(connected)} of {args.idle_agents} idle agents connected")
        await asyncio.sleep(0.2)  # polling interval
    print(f"{args.idle_agents} idle agents connected across A/B/C in {time.perf_counter() - t0:.0f} s "
          f"(certificates included)", flush=True)


def middle(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: dict[str, list[Result]], starts: dict[str, Starts], args: argparse.Namespace) -> bool:
    """Print the summary; True when the target is met."""
    p50 = {path: middle([r.figures["key_to_screen_p50_ms"] for r in rs]) for path, rs in results.items()}
    p95 = {path: middle([r.figures["key_to_screen_p95_ms"] for r in rs]) for path, rs in results.items()}
    loads = [r.figures["load1"] for rs in results.values() for r in rs]
    keys = {path: sum(int(r.figures["keys"]) for r in rs) for path, rs in results.items()}
    labels = {"c": "on C (single node)", "a": "on A, routed to C"}
    print()
    print(f"{'machine':33}{os.cpu_count()} cores, load average {min(loads):.1f}–{max(loads):.1f} "
          f"during the rounds; 3 nodes, nats-server, PostgreSQL, Xvfb, the agent and "
          f"{args.idle_agents} idle simulated agents share it")
    for path in ("c", "a"):
        print(f"{'typing ' + labels[path]:33}p50 {p50[path]:.1f} ms, p95 {p95[path]:.1f} ms "
              f"(median over {len(results[path])} rounds, {keys[path]} keys)")
    diff50, diff95 = p50["a"] - p50["c"], p95["a"] - p95["c"]
    met = abs(diff50) <= TARGET_MS
    print(f"{'difference (A - C)':33}p50 {diff50:+.1f} ms, p95 {diff95:+.1f} ms -> target p50 within "
          f"{TARGET_MS:g} ms: {'met' if met else 'MISSED'}")
    for path in ("c", "a"):
        s = starts[path]
        print(f"{'session start ' + labels[path]:33}from POST, p50 of {len(s.post)}: answered {middle(s.post):.0f} ms "
              f"(max {max(s.post):.0f}), device's challenge seen {middle(s.challenge):.0f} ms, first frame "
              f"{middle(s.first_frame):.0f} ms (max {max(s.first_frame):.0f})")
    return met


async def run(args: argparse.Namespace) -> int:
    pg_url = args.pg_url or os.environ.get("HELPLINE_TEST_PG_URL", "")
    if not pg_url:
        raise SystemExit("needs PostgreSQL: --pg-url or HELPLINE_TEST_PG_URL")
    schema, db_url = await fresh_schema(pg_url)
    xvfb = start_xvfb(WIDTH, HEIGHT)
    workers: list[BaseProcess] = []
    try:
        with contextlib.ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="helpline-typing-")))
            nats_port = free_port()
            nats = subprocess.Popen([shutil.which("nats-server") or "/usr/sbin/nats-server", "-a", "127.0.0.1",
                                     "-p", str(nats_port), "-js", "-sd", str(workdir / "js")],
                                    stdout=subprocess.DEVNULL, stderr=(workdir / "nats.log").open("wb"))
            stack.callback(stop, nats)
            nodes = ThreeNodes(workdir, xvfb, db_url, f"nats://127.0.0.1:{nats_port}", args.idle_agents)
            nodes.start(stack)
            print("nodes " + ", ".join(f"{n.name} pid {n.pid}" for n in nodes.nodes.values())
                  + f"; agent pid {nodes.agent_pid} on C, device {nodes.device_id}", flush=True)
            try:
                if args.idle_agents:
                    await idle_fleet(args, nodes, db_url, workdir / "sim", workers)
                await wait_cpu_quiet(nodes.agent_pid)
                meters = Meters({"agent": nodes.agent_pid, "node_c": nodes.nodes["c"].pid,
                                 "node_a": nodes.nodes["a"].pid})
                results: dict[str, list[Result]] = {"c": [], "a": []}
                starts = {"c": Starts(), "a": Starts()}
                for i in range(args.rounds):
                    for entry in ("c", "a") if i % 2 == 0 else ("a", "c"):
                        def connect(entry: str = entry) -> contextlib.AbstractAsyncContextManager[Viewer]:
                            return nodes.session_on(entry, starts[entry])

                        result = await typing(connect, meters, args.seconds, xvfb, f"typing_{entry}")
                        results[entry].append(result)
                        f = result.figures
                        print(f"round {i + 1} session on {entry.upper()}: p50 {f['key_to_screen_p50_ms']:.1f} ms, "
                              f"p95 {f['key_to_screen_p95_ms']:.1f} ms, start {starts[entry].first_frame[-1]:.0f} ms, "
                              f"CPU agent {f['agent_cpu_pct']:.0f} % node C {f['node_c_cpu_pct']:.0f} % "
                              f"node A {f['node_a_cpu_pct']:.1f} %, load {f['load1']:.1f}", flush=True)
            finally:
                for simulator in workers:
                    stop(simulator)
            return 0 if report(results, starts, args) else 1
    finally:
        xvfb.stop()
        await drop_schema(pg_url, schema)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="typing sessions per path, alternating (default 4)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each typing workload (max 10)")
    parser.add_argument("--idle-agents", type=int, default=900, help="simulated idle agents across the nodes")
    parser.add_argument("--workers", type=int, default=2, help="simulator processes for the idle agents")
    parser.add_argument("--connect-timeout", type=float, default=600.0)
    parser.add_argument("--pg-url", default="")
    args = parser.parse_args()
    args.seconds = min(args.seconds, 10.0)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
