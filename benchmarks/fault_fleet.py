"""Fault bench, parts 2 and 3: a fleet coming back after a restart, and a connection flood.

*Reconnect*: N simulated agents (real mTLS websockets, hello/welcome like the agent) reconnect
with the real agent's :class:`agent.backoff.Backoff`. After they have been up longer than the
backoff's reset time, the server restarts; the bench prints how long until all N are back.
For comparison the same fleet "aged" the old way (no reset, ten failures behind it) is timed too.

*Flood*: the server starts with a soft limit of 1,024 file descriptors (what a default system
service gets); thousands of idle TCP connections and slowloris clients hit each listener while a
real mTLS agent connects and the API is asked; the bench prints the server's fds, RSS and log
growth, the API's latency and whether the agent got in.

Run by ``benchmarks/faults.py``; usable alone: ``python benchmarks/fault_fleet.py reconnect|flood``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import shutil
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import connect  # noqa: E402

from agent.backoff import Backoff  # noqa: E402
from benchmarks.connect_agents import register_devices  # noqa: E402
from benchmarks.fault_support import free_port, start_server, stop_process  # noqa: E402
from certs import tls  # noqa: E402
from certs.pki import init_pki  # noqa: E402
from server.store import open_database  # noqa: E402


def _raise_own_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, wanted)), hard))


@dataclass
class Installation:
    root: Path
    data: Path
    config: Path
    env: dict[str, str]
    sims: list[tuple[str, Path, Path]]

    @property
    def agent_url(self) -> str:
        return f"wss://localhost:{self.env['HELPLINE_AGENT_PORT']}/agent"

    @property
    def console_port(self) -> int:
        return int(self.env["HELPLINE_CONSOLE_PORT"])

    @property
    def agent_port(self) -> int:
        return int(self.env["HELPLINE_AGENT_PORT"])

    def agent_context(self, index: int) -> ssl.SSLContext:
        _, cert, key = self.sims[index]
        return tls.agent_client_context(self.data / "pki" / "ca.pem", cert, key)


async def install(n: int) -> Installation:
    root = Path(tempfile.mkdtemp(prefix="helpline-fleet-"))
    data = root / "data"
    init_pki(data / "pki", ["localhost"])
    db = await open_database(f"sqlite:///{data / 'helpline.db'}")  # the schema, before registering devices
    await db.close()
    sims = await register_devices(data, n)
    config = root / "helpline.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\nhost = "127.0.0.1"\n')
    env = {"HELPLINE_AGENT_PORT": str(free_port()), "HELPLINE_CONSOLE_PORT": str(free_port())}
    return Installation(root, data, config, env, sims)


# --- reconnect ------------------------------------------------------------------------------


class FleetAgent:
    """One simulated agent's life: connect, hello, welcome, hold; on any end, the real backoff."""

    def __init__(self, device_id: str, ctx: ssl.SSLContext, backoff: Backoff, source: str | None = None) -> None:
        self.device_id, self.ctx, self.backoff = device_id, ctx, backoff
        #: The local address to connect from (None: any).
        self.source = source
        self.online = asyncio.Event()
        #: Why the last connection or attempt ended (printed when the fleet does not come back).
        self.last_end = ""

    async def live(self, url: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with connect(url, ssl=self.ctx, compression=None, ping_interval=None, open_timeout=60,
                                   local_addr=(self.source, 0) if self.source else None) as ws:
                    await ws.send(json.dumps({"v": 1, "type": "hello", "id": "h", "min_version": 1, "max_version": 1,
                                              "agent_version": "bench", "device_id": self.device_id}))
                    while json.loads(await ws.recv()).get("type") != "welcome":
                        pass
                    self.backoff.connected(loop.time())
                    self.online.set()
                    async for message in ws:
                        frame = json.loads(message)
                        if frame.get("type") == "ping":
                            await ws.send(json.dumps({"v": 1, "type": "pong", "id": "p", "in_reply_to": frame["id"]}))
            except Exception as exc:  # any end (refused, dropped, malformed) is a reconnect, as in the agent
                self.last_end = f"{type(exc).__name__}: {exc}"
            self.online.clear()
            await asyncio.sleep(self.backoff.next_delay(loop.time()))


async def _all_online(fleet: list[FleetAgent], timeout: float) -> float:
    start = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(a.online.wait() for a in fleet)), timeout)
    except TimeoutError:
        missing = [a for a in fleet if not a.online.is_set()]
        raise TimeoutError(f"{len(missing)} agents not online after {timeout:.0f}s; e.g. {missing[0].device_id}: "
                           f"{missing[0].last_end or 'no attempt ended yet'}") from None
    return time.monotonic() - start


async def run_reconnect(n: int, hold_s: float, progress: bool = True) -> list[str]:
    _raise_own_fd_limit(4 * n + 1024)
    inst = await install(n)
    # The simulated fleet shares one address; real devices each have their own, so lift the per-address
    # cap on waiting connections (the global cap stays as configured: it is part of what is measured).
    fleet_env = {"HELPLINE_KEEPALIVE_S": "20", "HELPLINE_MAX_UNAUTHENTICATED_PER_ADDRESS": str(n)}
    server = start_server(inst.config, inst.root / "server.log", inst.env, extra_env=fleet_env)
    lines: list[str] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for label, aged in (("fleet up > reset time", False), ("aged fleet, no reset (old agents)", True)):
            fleet = [FleetAgent(device_id, inst.agent_context(i), Backoff())
                     for i, (device_id, _, _) in enumerate(inst.sims)]
            tasks = [asyncio.ensure_future(a.live(inst.agent_url)) for a in fleet]
            first = await _all_online(fleet, 600)
            up_s = 1.0 if aged else hold_s
            if aged:
                for agent in fleet:  # months of routine restarts behind it, as before the reset existed
                    agent.backoff.reset_after_s, agent.backoff.failures = float("inf"), 10
            if progress:
                print(f"  {label}: {n} online in {first:.1f}s; up {up_s:.0f}s, then a restart", flush=True)
            await asyncio.sleep(up_s)  # the up-time being measured, not a synchronization
            stop_process(server)
            for agent in fleet:  # the server is gone: wait until every agent noticed
                while agent.online.is_set():
                    await asyncio.sleep(0.05)
            server = start_server(inst.config, inst.root / "server.log", inst.env, extra_env=fleet_env)
            back = await _all_online(fleet, 600)
            lines.append(f"reconnect {label:<34} all {n} back {back:5.1f} s after the server listened again")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            tasks = []
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stop_process(server)
        shutil.rmtree(inst.root, ignore_errors=True)
    return lines


# --- flood ----------------------------------------------------------------------------------


#: The flood comes from one address, the API user and the agent from another (loopback answers all of 127/8).
FLOOD_FROM, USERS_FROM = "127.0.0.1", "127.0.0.2"


def _low_fd_limit() -> None:
    """In the server's child process: the soft limit a default service gets (the server may raise it)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


async def _slowloris(port: int, stop: asyncio.Event) -> None:
    with contextlib.suppress(OSError):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(FLOOD_FROM, 0))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(OSError, ConnectionError):
            while not stop.is_set():
                writer.write(b"X-a: b\r\n")
                await writer.drain()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
        writer.close()


async def _api_latency(port: int, ca: Path, tries: int = 10) -> tuple[float, int]:
    """Worst latency (s) of ``tries`` GETs of the OpenAPI document, and how many answered 200."""
    ctx = ssl.create_default_context(cafile=str(ca))
    worst, ok = 0.0, 0
    for _ in range(tries):
        start = time.monotonic()
        with contextlib.suppress(OSError, asyncio.TimeoutError, ssl.SSLError):
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost",
                                        local_addr=(USERS_FROM, 0)), 10)
            writer.write(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            status = await asyncio.wait_for(reader.readline(), 10)
            ok += b" 200 " in status
            writer.close()
        worst = max(worst, time.monotonic() - start)
    return worst, ok


def _log_bytes(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def run_flood(idle: int, slow: int, progress: bool = True) -> list[str]:
    _raise_own_fd_limit(2 * idle + 4 * slow + 2048)
    inst = await install(1)
    log = inst.root / "server.log"
    server = start_server(inst.config, log, inst.env, preexec_fn=_low_fd_limit)
    proc = psutil.Process(server.pid)
    stop = asyncio.Event()
    sockets: list[asyncio.StreamWriter] = []
    lines: list[str] = []
    try:
        fds0, rss0, log0 = proc.num_fds(), proc.memory_info().rss, _log_bytes(log)
        for port in (inst.agent_port, inst.console_port):
            for _ in range(idle):
                with contextlib.suppress(OSError):
                    sockets.append((await asyncio.open_connection("127.0.0.1", port, local_addr=(FLOOD_FROM, 0)))[1])
        loris = [asyncio.ensure_future(_slowloris(p, stop)) for p in (inst.agent_port, inst.console_port)
                 for _ in range(slow)]
        if progress:
            print(f"  flood: {len(sockets)} idle connections + {len(loris)} slowloris open", flush=True)
        latency, answered = await _api_latency(inst.console_port, inst.data / "pki" / "ca.pem")
        agent = FleetAgent(inst.sims[0][0], inst.agent_context(0), Backoff(base_s=0.2), source=USERS_FROM)
        agent_task = asyncio.ensure_future(agent.live(inst.agent_url))
        try:
            agent_s = await _all_online([agent], 60)
            agent_line = f"a real mTLS agent got in after {agent_s:.2f} s"
        except TimeoutError:
            agent_line = "a real mTLS agent did NOT get in within 60 s"
        agent_task.cancel()
        await asyncio.gather(agent_task, return_exceptions=True)
        fds1, rss1 = proc.num_fds(), proc.memory_info().rss
        stop.set()
        await asyncio.gather(*loris, return_exceptions=True)
        log1 = _log_bytes(log)
        lines += [
            f"flood                  {idle} idle per listener + {slow} slowloris per listener from {FLOOD_FROM}, "
            f"server soft fd limit 1024 at start; API user and agent from {USERS_FROM}",
            f"server fds             {fds0} before -> {fds1} during the flood",
            f"server RSS             {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB",
            f"server log growth      {log1 - log0} bytes",
            f"API during the flood   {answered}/10 answered 200, worst {latency * 1000:.0f} ms",
            f"agent during the flood {agent_line}",
        ]
    finally:
        stop.set()
        for writer in sockets:
            writer.close()
        stop_process(server)
        shutil.rmtree(inst.root, ignore_errors=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["reconnect", "flood"])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--hold", type=float, default=65.0, help="seconds up before the restart (reset is 60 s)")
    parser.add_argument("--idle", type=int, default=2000, help="idle connections per listener")
    parser.add_argument("--slow", type=int, default=50, help="slowloris clients per listener")
    args = parser.parse_args()
    if args.part == "reconnect":
        lines = asyncio.run(run_reconnect(args.agents, args.hold))
    else:
        lines = asyncio.run(run_flood(args.idle, args.slow))
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
