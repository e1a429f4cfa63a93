"""Connect N simulated agents (real mTLS websockets from one client process) to a real server.

Usage: python benchmarks/connect_agents.py N [--hold SECONDS] [--concurrency C]

Each simulated agent has its own device key and certificate issued by the org CA and is
registered as enrolled; it opens ``wss://…/agent``, says hello, waits for welcome and then
answers pings and pings when idle, like the real agent. When its connection drops during the
hold it reconnects after the real agent's :class:`agent.backoff.Backoff` delay (full jitter,
reset after a connection that stayed up), so a fleet here spreads out as a real one does.
The server runs as its own process (``helpline server``) so its RSS and CPU can be measured alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

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
from server.store import open_database


async def register_devices(data: Path, n: int) -> list[tuple[str, Path, Path]]:
    ca = CertificateAuthority.load(data / "pki")
    db = await open_database(f"sqlite:///{data / 'helpline.db'}")
    out: list[tuple[str, Path, Path]] = []
    certs_dir = data / "sim"
    certs_dir.mkdir()
    now = datetime.now(UTC)
    async with db.transaction() as tx:
        await devices.ensure_group(tx, "bench")
        for i in range(n):
            device_id = f"sim-{i:06d}"
            key = generate_device_key()
            cert = ca.sign_device_csr(build_csr(key), device_id, now=now)
            key_path, cert_path = certs_dir / f"{device_id}.key", certs_dir / f"{device_id}.pem"
            write_private_key(key_path, key)
            write_certificates(cert_path, [cert, *ca.chain])  # as agents store it: with the intermediate
            await devices.register(tx, device_id, "bench", certificate_serial_hex(cert),
                                   cert.not_valid_after_utc.timestamp(), hostname=device_id)
            out.append((device_id, cert_path, key_path))
    await db.close()
    return out


class SimAgent:
    def __init__(self, device_id: str, ctx: ssl.SSLContext, backoff: Backoff | None = None) -> None:
        self.device_id, self.ctx = device_id, ctx
        self.backoff = backoff or Backoff()  # the agent's defaults: cap 60 s, reset after 60 s up
        self.ws: ClientConnection | None = None
        self.pongs = 0
        self.reconnects = 0

    async def connect(self, url: str) -> None:
        ws = await connect(url, ssl=self.ctx, compression=None, ping_interval=None, open_timeout=60)
        try:
            await ws.send(json.dumps({"v": 1, "type": "hello", "id": "h", "min_version": 1, "max_version": 1,
                                      "agent_version": "bench", "device_id": self.device_id}))
            welcome = json.loads(await ws.recv())
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"{self.device_id}: expected welcome, got {welcome}")
        except BaseException:
            await ws.close()
            raise
        self.ws = ws
        self.backoff.connected(asyncio.get_running_loop().time())

    async def answer_pings(self) -> None:
        """Answer the server's pings until cancelled (websockets' ``recv`` is safe to cancel)."""
        assert self.ws is not None
        n = 0
        while True:
            msg = json.loads(await self.ws.recv())
            if msg["type"] == "ping":
                n += 1
                await self.ws.send(json.dumps({"v": 1, "type": "pong", "id": f"a{n}", "in_reply_to": msg["id"]}))

    async def keepalive(self, url: str, until: float, interval: float) -> None:
        """Ping when idle and answer pings until ``until``; after a drop, reconnect with the agent's backoff."""
        loop = asyncio.get_running_loop()
        while time.monotonic() < until:
            try:
                if self.ws is None:
                    self.reconnects += 1
                    await self.connect(url)
                await self._ping_until(until, interval)
            except (OSError, TimeoutError, WebSocketException, RuntimeError, ValueError):
                if self.ws is not None:
                    await self.ws.close()
                self.ws = None
                delay = self.backoff.next_delay(loop.time())
                await asyncio.sleep(min(delay, max(0.0, until - time.monotonic())))

    async def _ping_until(self, until: float, interval: float) -> None:
        assert self.ws is not None
        n = 0
        while time.monotonic() < until:
            n += 1
            await self.ws.send(json.dumps({"v": 1, "type": "ping", "id": f"p{n}"}))
            while True:
                msg = json.loads(await self.ws.recv())
                if msg["type"] == "ping":
                    await self.ws.send(json.dumps({"v": 1, "type": "pong", "id": f"r{n}", "in_reply_to": msg["id"]}))
                elif msg["type"] == "pong":
                    self.pongs += 1
                    break
            await asyncio.sleep(min(interval, max(0.0, until - time.monotonic())))


async def run(n: int, hold: float, concurrency: int, keepalive: float) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * n + 1024)), hard))
    data = Path(tempfile.mkdtemp(prefix="helpline-bench-"))
    server_proc: subprocess.Popen[bytes] | None = None
    try:
        init_pki(data / "pki", ["localhost"])
        agent_port, console_port = free_port(), free_port()
        # Create the schema first so devices can be registered before the server starts.
        db = await open_database(f"sqlite:///{data / 'helpline.db'}")
        await db.close()
        print(f"issuing {n} device certificates …", flush=True)
        t0 = time.perf_counter()
        sims = await register_devices(data, n)
        print(f"  {time.perf_counter() - t0:.1f}s", flush=True)
        # The simulated fleet connects from one address, real devices from many: lift the per-address cap
        # on connections in their handshake (server/net/limits.py), which would reset all but 64 of them.
        env = dict(os.environ, HELPLINE_KEEPALIVE_S=str(keepalive), HELPLINE_MAX_UNAUTHENTICATED_PER_ADDRESS=str(n))
        server_proc = subprocess.Popen(
            [sys.executable, "-m", "helpline", "server", "--data", str(data), "--host", "127.0.0.1",
             "--agent-port", str(agent_port), "--console-port", str(console_port)],
            stdout=subprocess.DEVNULL, stderr=(data / "server.log").open("wb"), env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", agent_port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server_proc.poll() is not None:
                    raise RuntimeError("server did not start") from None
                await asyncio.sleep(0.1)
        proc = psutil.Process(server_proc.pid)
        rss_before = proc.memory_info().rss
        cpu_before = proc.cpu_times()
        url = f"wss://localhost:{agent_port}/agent"
        agents = [SimAgent(d, tls.agent_client_context(data / "pki" / "ca.pem", c, k)) for d, c, k in sims]
        sem = asyncio.Semaphore(concurrency)
        connected = 0

        responders: list[asyncio.Task[None]] = []

        async def one(agent: SimAgent) -> None:
            nonlocal connected
            async with sem:
                await agent.connect(url)
                connected += 1
            # Until the hold starts, answer the server's pings as a real agent would: with a keepalive shorter
            # than the connect phase the server would otherwise drop the first agents for their silence.
            responders.append(asyncio.create_task(agent.answer_pings()))

        print(f"connecting {n} agents (concurrency {concurrency}) …", flush=True)
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(a) for a in agents), return_exceptions=True)
        connect_s = time.perf_counter() - t0
        failures = [r for r in results if isinstance(r, Exception)]
        cpu_connect = proc.cpu_times()
        # "All online" as the server records it.
        db = await open_database(f"sqlite:///{data / 'helpline.db'}")
        while True:
            row = await db.fetchone("SELECT COUNT(*) AS c FROM devices WHERE online = 1")
            if row and row["c"] >= connected:
                break
            await asyncio.sleep(0.05)
        all_online_s = time.perf_counter() - t0
        rss_connected = proc.memory_info().rss
        for task in responders:
            task.cancel()
        await asyncio.gather(*responders, return_exceptions=True)
        print(f"holding {connected} connections for {hold:.0f}s with keepalive every {keepalive:.0f}s …", flush=True)
        until = time.monotonic() + hold
        hold_cpu0, hold_t0 = proc.cpu_times(), time.perf_counter()
        live = [a for a in agents if a.ws is not None]
        await asyncio.gather(*(a.keepalive(url, until, keepalive) for a in live), return_exceptions=True)
        hold_cpu1, hold_wall = proc.cpu_times(), time.perf_counter() - hold_t0
        row = await db.fetchone("SELECT COUNT(*) AS c FROM devices WHERE online = 1")
        still_online = row["c"] if row else 0
        await db.close()
        connect_cpu = (cpu_connect.user + cpu_connect.system) - (cpu_before.user + cpu_before.system)
        hold_cpu = (hold_cpu1.user + hold_cpu1.system) - (hold_cpu0.user + hold_cpu0.system)
        print()
        print(f"agents                 {n} ({len(failures)} failed"
              + (f": {type(failures[0]).__name__}: {failures[0]}" if failures else "") + ")")
        print(f"connect rate           {connected / connect_s:.0f} connections/s (mTLS + hello/welcome)")
        print(f"time to all online     {all_online_s:.2f} s")
        print(f"server RSS             {rss_before / 2**20:.1f} MiB idle -> {rss_connected / 2**20:.1f} MiB "
              f"connected = {(rss_connected - rss_before) / max(1, connected) / 1024:.1f} KiB per agent")
        print(f"server CPU connecting  {connect_cpu:.2f} s CPU for {connected} handshakes "
              f"({1000 * connect_cpu / max(1, connected):.2f} ms each)")
        print(f"server CPU holding     {100 * hold_cpu / hold_wall:.1f} % of one core "
              f"({sum(a.pongs for a in live)} keepalive round trips)")
        print(f"still online at end    {still_online} "
              f"({sum(a.reconnects for a in live)} reconnects during the hold, with the agent's backoff)")
        for agent in live:
            if agent.ws is not None:
                await agent.ws.close()
    finally:
        if server_proc is not None:
            server_proc.terminate()
            try:
                server_proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server_proc.kill()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", type=int, nargs="?", default=2000)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds to keep all agents connected")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight")
    parser.add_argument("--keepalive", type=float, default=10.0, help="keepalive interval (s)")
    args = parser.parse_args()
    asyncio.run(run(args.n, args.hold, args.concurrency, args.keepalive))


if __name__ == "__main__":
    main()
