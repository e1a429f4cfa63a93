"""Three server nodes on one PostgreSQL and one nats-server, a simulated fleet across them.

Usage: python benchmarks/multinode.py [--agents 20000] [--workers 4] [--hold 20] [--revocations 50]

Needs HELPLINE_TEST_PG_URL (or --pg-url; a schema is made for the run and dropped after) and
nats-server. Every part is a real process: nats-server, three ``helpline server`` nodes, and
``--workers`` simulator processes, each holding its share of agents: real mTLS websockets, hello and
welcome, keepalive pings, and after a drop the real agent's :class:`agent.backoff.Backoff` (full
jitter) before reconnecting to another node than the one that dropped or refused it (what a TCP load
balancer with health checks in front of the nodes does). Printed:

* per node: agents held, RSS per agent, CPU while the fleet idles with keepalives;
* event fan-out: a device on node C revoked by a bus member (the code node A runs:
  ``devices.revoke`` on the database wrapped by :class:`server.bus.events.RingingDatabase`) until its
  channel on C is closed, seen by the device — p50/p95 over ``--revocations`` devices;
* node loss: node C killed (SIGKILL, by PID) until every agent is connected again elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import os
import random
import resource
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import SynchronizedArray
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from agent.backoff import Backoff
from certs import tls
from certs.pki import (
    CertificateAuthority,
    build_csr,
    certificate_serial_hex,
    generate_device_key,
    init_pki,
    write_certificates,
    write_private_key,
)
from helpline.ports import free_port
from server import devices
from server.bus.connection import connect as bus_connect
from server.bus.events import RingingDatabase
from server.config import ServerConfig
from server.store import open_database

NODES = 3
Sim = tuple[str, str, str]  # device id, cert path, key path

log = logging.getLogger(__name__)


async def register(db_url: str, pki: Path, out: Path, ids: list[str]) -> list[Sim]:
    """Issue a certificate per simulated device and enroll it (as enrollment would)."""
    ca = CertificateAuthority.load(pki)
    db = await open_database(db_url)
    sims: list[Sim] = []
    now = datetime.now(UTC)
    async with db.transaction() as tx:
        await devices.ensure_group(tx, "bench")
        for device_id in ids:
            key = generate_device_key()
            cert = ca.sign_device_csr(build_csr(key), device_id, now=now)
            key_path, cert_path = out / f"{device_id}.key", out / f"{device_id}.pem"
            write_private_key(key_path, key)
            write_certificates(cert_path, [cert, *ca.chain])
            await devices.register(tx, device_id, "bench", certificate_serial_hex(cert),
                                   cert.not_valid_after_utc.timestamp(), hostname=device_id)
            sims.append((device_id, str(cert_path), str(key_path)))
    await db.close()
    return sims


async def hello(url: str, ctx: ssl.SSLContext, device_id: str) -> ClientConnection:
    ws = await connect(url, ssl=ctx, compression=None, ping_interval=None, open_timeout=60)
    try:
        await ws.send(json.dumps({"v": 1, "type": "hello", "id": "h", "min_version": 1, "max_version": 1,
                                  "agent_version": "bench", "device_id": device_id}))
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"{device_id}: expected welcome, got {welcome.get('type')}")
    except BaseException:
        await ws.close()
        raise
    return ws


async def agent_life(sim: Sim, ca: str, urls: list[str], home: int, counts: Any, base: int,
                     keepalive: float, gate: asyncio.Semaphore) -> None:
    """One simulated agent for ever: connect, keep alive, after a drop back off and pick a node at random."""
    device_id, cert, key = sim
    ctx = tls.agent_client_context(Path(ca), Path(cert), Path(key))
    backoff = Backoff()  # the agent's defaults: base 1 s, cap 60 s, reset after 60 s up
    loop = asyncio.get_running_loop()
    node = home
    async with gate:  # the fleet's first connections, so many in flight at once
        first = await _attempt(urls[node], ctx, device_id)
    while True:
        try:
            ws = first or await hello(urls[node], ctx, device_id)
            first = None
            backoff.connected(loop.time())
            counts[base + node] += 1
            try:
                n = 0
                while True:
                    try:
                        msg = json.loads(await asyncio.wait_for(ws.recv(), keepalive))
                    except TimeoutError:
                        n += 1
                        await ws.send(json.dumps({"v": 1, "type": "ping", "id": f"p{n}"}))
                        continue
                    if msg.get("type") == "ping":
                        await ws.send(json.dumps({"v": 1, "type": "pong", "id": f"r{n}", "in_reply_to": msg["id"]}))
            finally:
                counts[base + node] -= 1
                await ws.close()
        except (OSError, TimeoutError, WebSocketException, RuntimeError, ValueError) as exc:
            log.debug("simulated agent %s disconnected: %s; reconnecting after backoff", device_id, exc)
        await asyncio.sleep(backoff.next_delay(loop.time()))
        # The load balancer's pick: another node than the one that just failed (its health check took it out).
        node = random.choice([n for n in range(len(urls)) if n != node] or [node])


async def _attempt(url: str, ctx: ssl.SSLContext, device_id: str) -> ClientConnection | None:
    try:
        return await hello(url, ctx, device_id)
    except (OSError, TimeoutError, WebSocketException, RuntimeError, ValueError):
        return None


def worker(sims: list[Sim], ca: str, urls: list[str], counts: Any, index: int, keepalive: float,
           concurrency: int) -> None:
    """A simulator process: its agents, until the parent terminates it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> None:
        gate = asyncio.Semaphore(concurrency)
        await asyncio.gather(*(agent_life(s, ca, urls, i % len(urls), counts, index * len(urls), keepalive, gate)
                               for i, s in enumerate(sims)))

    asyncio.run(main())


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


async def run(args: argparse.Namespace) -> None:
    pg_url = args.pg_url or os.environ.get("HELPLINE_TEST_PG_URL", "")
    if not pg_url:
        raise SystemExit("needs PostgreSQL: --pg-url or HELPLINE_TEST_PG_URL")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    data = Path(tempfile.mkdtemp(prefix="helpline-multinode-"))
    schema = f"hl_bench_{os.getpid()}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(pg_url)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    db_url = f"{pg_url}{'&' if '?' in pg_url else '?'}search_path={schema}"
    procs: list[subprocess.Popen[bytes]] = []
    workers: list[BaseProcess] = []
    try:
        init_pki(data / "pki", ["localhost", "127.0.0.1"])
        nats_port = free_port()
        nats = subprocess.Popen([shutil.which("nats-server") or "/usr/sbin/nats-server", "-a", "127.0.0.1",
                                 "-p", str(nats_port), "-js", "-sd", str(data / "js")],
                                stdout=subprocess.DEVNULL, stderr=(data / "nats.log").open("wb"))
        procs.append(nats)
        nats_url = f"nats://127.0.0.1:{nats_port}"
        (data / "sim").mkdir()
        print(f"issuing {args.agents + args.revocations} device certificates …", flush=True)
        t0 = time.perf_counter()
        await (await open_database(db_url)).close()  # the schema, before the nodes race to migrate it
        sims = await register(db_url, data / "pki", data / "sim", [f"sim-{i:06d}" for i in range(args.agents)])
        probes = await register(db_url, data / "pki", data / "sim", [f"fan-{i:04d}" for i in range(args.revocations)])
        print(f"  {time.perf_counter() - t0:.1f} s", flush=True)
        agent_ports, console_ports = [free_port() for _ in range(NODES)], [free_port() for _ in range(NODES)]
        nodes: list[subprocess.Popen[bytes]] = []
        for i in range(NODES):
            env = dict(os.environ, HELPLINE_DATABASE_URL=db_url, HELPLINE_NATS_URL=nats_url,
                       HELPLINE_NODE_ID=f"node-{'abc'[i]}", HELPLINE_PKI_DIR=str(data / "pki"),
                       HELPLINE_KEEPALIVE_S=str(args.keepalive), HELPLINE_LOG_LEVEL="warning",
                       HELPLINE_MAX_UNAUTHENTICATED_PER_ADDRESS=str(args.agents))
            nodes.append(subprocess.Popen(
                [sys.executable, "-m", "helpline", "server", "--data", str(data / f"node{i}"), "--host", "127.0.0.1",
                 "--agent-port", str(agent_ports[i]), "--console-port", str(console_ports[i])],
                stdout=subprocess.DEVNULL, stderr=(data / f"node{i}.log").open("wb"), env=env))
        procs.extend(nodes)
        await wait_ports([nats_port, *agent_ports], [nats, *nodes])
        rss0 = [rss(p.pid) for p in nodes]
        urls = [f"wss://localhost:{p}/agent" for p in agent_ports]
        ca = str(data / "pki" / "ca.pem")
        ctx = mp.get_context("spawn")
        counts: SynchronizedArray[Any] = ctx.Array("i", args.workers * NODES, lock=False)  # type: ignore[assignment]
        print(f"connecting {args.agents} agents from {args.workers} simulator processes …", flush=True)
        t0 = time.perf_counter()
        for w in range(args.workers):
            p = ctx.Process(target=worker, args=(sims[w::args.workers], ca, urls, counts, w, args.keepalive,
                                                 args.concurrency), daemon=True)
            p.start()
            workers.append(p)
        deadline = time.monotonic() + args.connect_timeout
        while sum(held(counts, args.workers)) < args.agents:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {sum(held(counts, args.workers))} of {args.agents} connected")
            await asyncio.sleep(0.2)
        connect_s = time.perf_counter() - t0
        print(f"  all {args.agents} connected in {connect_s:.1f} s; holding {args.hold:.0f} s idle "
              f"(keepalive {args.keepalive:g} s) …", flush=True)
        cpu0, w0 = [cpu(p.pid) for p in nodes], time.perf_counter()
        await asyncio.sleep(args.hold)
        cpu1, wall = [cpu(p.pid) for p in nodes], time.perf_counter() - w0
        per_node = held(counts, args.workers)
        rss1 = [rss(p.pid) for p in nodes]

        # Fan-out: probes on node C, revoked by a bus member, closed as the device sees it.
        bus = await bus_connect(ServerConfig(nats_url=nats_url, node_id="bench"))
        assert bus is not None
        inner = await open_database(db_url)
        db = RingingDatabase(inner, bus)
        fanout: list[float] = []
        after_commit: list[float] = []
        for device_id, cert, key in probes:
            ws = await hello(urls[2], tls.agent_client_context(Path(ca), Path(cert), Path(key)), device_id)
            started = time.perf_counter()
            assert await devices.revoke(db, device_id, actor="bench")  # type: ignore[arg-type]
            committed = time.perf_counter()
            await asyncio.wait_for(ws.wait_closed(), 10)
            fanout.append((time.perf_counter() - started) * 1000)
            after_commit.append((time.perf_counter() - committed) * 1000)
        await db.close()
        await bus.close()

        # Node loss: C killed; its agents back on A and B.
        lost = per_node[2]
        t0 = time.perf_counter()
        stop(nodes[2], signal.SIGKILL)
        deadline = time.monotonic() + args.recovery_timeout
        recovered: float | None = None
        while time.monotonic() < deadline:
            now_held = held(counts, args.workers)
            if now_held[2] == 0 and sum(now_held) >= args.agents:
                recovered = time.perf_counter() - t0
                break
            await asyncio.sleep(0.2)
        after = held(counts, args.workers)

        print()
        print(f"machine                {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end; "
              f"nodes, nats-server, PostgreSQL and {args.workers} simulator processes share it")
        print(f"agents                 {args.agents} connected in {connect_s:.1f} s")
        for i in range(NODES):
            print(f"node {'abc'[i]}                 {per_node[i]} agents, RSS {rss0[i] / 2**20:.0f} -> "
                  f"{rss1[i] / 2**20:.0f} MiB = {(rss1[i] - rss0[i]) / max(1, per_node[i]) / 1024:.1f} KiB/agent, "
                  f"CPU idle fleet {100 * (cpu1[i] - cpu0[i]) / wall:.1f} % of a core")
        for label, figures in (("revoke issued->closed", fanout), ("committed->closed", after_commit)):
            figures.sort()
            print(f"fan-out {label:22} p50 {statistics.median(figures):.1f} ms, "
                  f"p95 {figures[max(0, int(len(figures) * 0.95) - 1)]:.1f} ms, max {figures[-1]:.1f} ms "
                  f"({len(figures)} devices on node C; revoked on PostgreSQL, ring over NATS)")
        if recovered is None:
            print(f"node C killed          {lost} agents; NOT all back within {args.recovery_timeout:.0f} s: {after}")
        else:
            print(f"node C killed          {lost} agents back on A/B in {recovered:.1f} s "
                  f"(agent backoff: full jitter, base 1 s) -> now {after[0]} on A, {after[1]} on B")
    finally:
        for simulator in workers:
            stop(simulator)
        for proc in reversed(procs):
            stop(proc)
        conn = await asyncpg.connect(pg_url)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=4, help="simulator processes")
    parser.add_argument("--concurrency", type=int, default=100, help="first connections in flight per worker")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds of idle fleet for the CPU figure")
    parser.add_argument("--keepalive", type=float, default=20.0, help="keepalive interval (s), the default")
    parser.add_argument("--revocations", type=int, default=50, help="devices revoked for the fan-out figure")
    parser.add_argument("--connect-timeout", type=float, default=900.0)
    parser.add_argument("--recovery-timeout", type=float, default=180.0)
    parser.add_argument("--pg-url", default="")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
