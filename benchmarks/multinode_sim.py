"""The simulated agents of ``benchmarks/multinode.py``: one simulator process holds a share of the fleet.

Each simulated agent is what the real agent is on the wire: its own key and certificate (mTLS), hello
and welcome, keepalive pings and pongs, health samples numbered by ``seq`` kept in an outbox until
the server's ``health.ack`` covers them and resent after a reconnect ("Agent: sending without
loss"), and after a drop the real agent's :class:`agent.backoff.Backoff` (full jitter) before it
reconnects — to another node than the one that dropped or refused it (what a TCP load balancer with
health checks in front of the nodes does).

Source addresses: in ``fleet`` mode every agent binds its own loopback address (127.100.x.y; all of
127/8 is local on Linux), so the server's per-address caps see a fleet of hosts; in ``nat`` mode all
come from 127.0.0.1, as a fleet behind one NAT address would.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import itertools
import json
import logging
import random
import resource
import socket
import ssl
import time
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, WebSocketException

from agent.backoff import Backoff
from certs import tls

log = logging.getLogger(__name__)

#: Why a connection attempt or a channel ended, as counted per simulator process.
CAUSES = ("refused", "reset", "timeout", "tls", "closed", "http", "other")
#: How long a hello waits for the welcome: the real agent's ControlChannel closes after 3 x 20 s of silence
#: (it was 30 s here: under a reconnect herd, attempts were abandoned and remade that the agent would keep).
WELCOME_WAIT_S = 60.0
#: Phases the parent sets: health sampling off, on, stopped (outboxes drain), report (write acks).
IDLE, SAMPLING, DRAINING, REPORT = 0, 1, 2, 3


class _Trace:
    """This process's record of the recovery after the kill: every attempt of an agent whose channel was
    on the killed node (offset from the kill, node, backoff step, outcome, the steps' ms)."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.rows: list[list[Any]] = []

    def start(self) -> None:
        if not self.t0:
            self.t0 = time.monotonic()


TRACE = _Trace()


class Balancer:
    """The load balancer in front of the nodes, as one simulator process sees it: a node that refused a
    connection is out for ``fail_timeout_s`` (nginx's passive check, ``max_fails=1 fail_timeout=10s``,
    its defaults; HAProxy's active checks take a dead server out in about as long), and a retry goes to
    another node than the one that just failed while there is one up.

    A refused connection is retried on another node at once (nginx's ``proxy_next_upstream``, on by
    default): the agent sees no failure while a node is up. Without this model a retry after a failure
    on A picked the killed C half the time: refused at once, and that agent's backoff doubled for
    nothing (876 refusals in one 6,000 run)."""

    def __init__(self, nodes: int, fail_timeout_s: float = 10.0) -> None:
        self.nodes = nodes
        self.fail_timeout_s = fail_timeout_s
        self._down_until = [0.0] * nodes

    def refused(self, node: int) -> None:
        self._down_until[node] = time.monotonic() + self.fail_timeout_s

    def pick(self, failed: int) -> int:
        now = time.monotonic()
        up = [n for n in range(self.nodes) if self._down_until[n] <= now]
        return random.choice([n for n in up if n != failed] or up or [failed])


class Sim(NamedTuple):
    device_id: str
    cert: str
    key: str
    source: str  # the local address to bind ("" = the system's choice)
    health: bool  # sends health samples


def source_address(index: int) -> str:
    """A distinct loopback address per agent: 127.100.0.1 … (254 a /24, never .0 or .255)."""
    block, host = divmod(index, 254)
    return f"127.{100 + block // 256}.{block % 256}.{host + 1}"


def cause(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, ConnectionClosed):
        return "closed"
    if isinstance(exc, InvalidHandshake):
        return "http"
    name = f"{type(exc).__name__}: {exc}"[:80]
    if name in OTHERS or len(OTHERS) < 20:  # kinds, not every message (addresses vary)
        OTHERS[name] = OTHERS.get(name, 0) + 1
    return "other"


#: This process's "other" failures by exception and message, reported to the parent.
OTHERS: dict[str, int] = {}


class _TimedConnection(ClientConnection):
    """A websocket client connection that notes when its transport was made: for a TLS transport asyncio
    calls ``connection_made`` once the handshake is done, so this is the end of the TLS handshake."""

    tls_done = 0.0

    def connection_made(self, transport: Any) -> None:
        self.tls_done = time.monotonic()
        super().connection_made(transport)


class Steps:
    """The times of one connection attempt's steps (monotonic seconds; 0 = not reached)."""

    __slots__ = ("gated", "started", "tcp", "tls", "welcome", "ws")

    def __init__(self) -> None:
        self.gated = self.started = time.monotonic()
        self.tcp = self.tls = self.ws = self.welcome = 0.0

    def row(self) -> list[float]:
        """Gate wait, TCP connect, TLS handshake, websocket upgrade, hello -> welcome (ms; -1 = not reached)."""
        marks = [self.gated, self.started, self.tcp, self.tls, self.ws, self.welcome]
        return [round((b - a) * 1000, 1) if a and b else -1.0 for a, b in itertools.pairwise(marks)]


class Agent:
    """One simulated agent's state across its connections: backoff and health outbox."""

    def __init__(self, sim: Sim, ca: str) -> None:
        self.sim = sim
        self._ca = ca
        self._ctx: ssl.SSLContext | None = None
        self.backoff = Backoff()  # the agent's defaults: base 1 s, cap 60 s, reset after 60 s up
        self.next_seq = 1
        self.pending: list[dict[str, Any]] = []  # sent or not, not yet acknowledged
        self.acked = 0  # every seq <= acked is acknowledged (stored, says the server)
        self.ever = False  # connected at least once
        self.dropped_by_kill = False  # its channel was on the killed node when it died
        self.slept = 0.0  # seconds of backoff between the kill and its return
        self.returned = -1.0  # seconds from the kill to its return (-1: not back, or not the killed node's)

    @property
    def ctx(self) -> ssl.SSLContext:
        """The agent's TLS context, made at its first connection (one for all its connections, as the agent's):
        ~10 ms of PEM parsing each, so made up front 5,000 of them kept a simulator from connecting for ~50 s."""
        if self._ctx is None:
            self._ctx = tls.agent_client_context(Path(self._ca), Path(self.sim.cert), Path(self.sim.key))
        return self._ctx

    async def hello(self, url: str, steps: Steps | None = None,
                    gate: asyncio.Semaphore | None = None) -> ClientConnection:
        steps = steps or Steps()
        async with gate or contextlib.nullcontext():
            steps.started = time.monotonic()
            async with asyncio.timeout(15):  # the real agent's open_timeout: TCP, TLS and the upgrade
                sock = await self._tcp(url)
                steps.tcp = time.monotonic()
                try:
                    ws = await connect(url, sock=sock, ssl=self.ctx, server_hostname="localhost", compression=None,
                                       ping_interval=None, open_timeout=None, close_timeout=2,
                                       create_connection=_TimedConnection)
                except BaseException:
                    sock.close()
                    raise
        steps.tls = ws.tls_done if isinstance(ws, _TimedConnection) else 0.0
        steps.ws = time.monotonic()
        try:
            await ws.send(json.dumps({"v": 1, "type": "hello", "id": "h", "min_version": 1, "max_version": 1,
                                      "agent_version": "bench", "device_id": self.sim.device_id}))
            # The real agent's patience: its channel gives up after 3 keepalives (60 s) of silence.
            welcome = json.loads(await asyncio.wait_for(ws.recv(), WELCOME_WAIT_S))
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"{self.sim.device_id}: expected welcome, got {welcome.get('type')}")
            steps.welcome = time.monotonic()
        except BaseException:
            await ws.close()
            raise
        return ws

    async def _tcp(self, url: str) -> socket.socket:
        """The TCP connection, from this agent's source address (timed apart from TLS)."""
        parts = urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if self.sim.source:
                sock.bind((self.sim.source, 0))
            await asyncio.get_running_loop().sock_connect(sock, (parts.hostname or "127.0.0.1", parts.port or 443))
        except BaseException:
            sock.close()
            raise
        return sock

    async def channel(self, ws: ClientConnection, keepalive: float, health_s: float, phase: Any) -> None:
        """Keep the channel: pings when due, health samples while sampling, the outbox resent first."""
        loop = asyncio.get_running_loop()
        n = 0
        if self.pending:
            n += 1
            await self._send_batch(ws, self.pending, n)
        now = loop.time()
        next_ping = now + keepalive
        next_sample = now + random.uniform(0, health_s) if self.sim.health else float("inf")
        while True:
            now = loop.time()
            if now >= next_sample:
                next_sample += health_s
                if phase.value == SAMPLING:
                    sample = {"seq": self.next_seq, "ts": time.time(), "metrics": {"cpu_percent": 5.0,
                                                                                   "mem_percent": 40.0}}
                    self.next_seq += 1
                    self.pending.append(sample)
                    n += 1
                    await self._send_batch(ws, [sample], n)
            if now >= next_ping:
                n += 1
                await ws.send(json.dumps({"v": 1, "type": "ping", "id": f"p{n}"}))
                next_ping = now + keepalive
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, min(next_ping, next_sample) - now)))
            except TimeoutError:
                continue
            kind = msg.get("type")
            if kind == "ping":
                n += 1
                await ws.send(json.dumps({"v": 1, "type": "pong", "id": f"r{n}", "in_reply_to": msg["id"]}))
            elif kind == "health.ack":
                up_to = int(msg["up_to"])
                self.acked = max(self.acked, up_to)
                self.pending = [s for s in self.pending if s["seq"] > up_to]

    async def _send_batch(self, ws: ClientConnection, samples: list[dict[str, Any]], n: int) -> None:
        await ws.send(json.dumps({"v": 1, "type": "health.batch", "id": f"b{n}", "samples": samples[:100]}))


async def agent_life(agent: Agent, urls: list[str], home: int, counts: Any, base: int, causes: Any,
                     cause_base: int, keepalive: float, health_s: float, phase: Any, killed: Any, back: Any,
                     index: int, gate: asyncio.Semaphore, balancer: Balancer | None = None) -> None:
    """One simulated agent for ever: connect, keep the channel, after an end back off and pick another node.

    ``gate`` bounds this process's connection set-ups (TCP, TLS, the websocket upgrade: the CPU a real
    device spends on its own); the wait for the welcome, the server's work, is outside it.

    An agent that never got connected stops trying once the parent moves on from the connect phase
    (the fleet is what connected), so that the node-loss figures count only the killed node's agents."""
    loop = asyncio.get_running_loop()
    balancer = balancer or Balancer(len(urls))
    node = home
    while True:
        if not agent.ever and phase.value != IDLE:
            return
        steps = Steps()
        step = agent.backoff.failures
        try:
            ws = await agent.hello(urls[node], steps, gate)
            if agent.dropped_by_kill:
                TRACE.rows.append([round(steps.gated - TRACE.t0, 3), node, step, "ok", *steps.row()])
            agent.backoff.connected(loop.time())
            agent.ever = True
            if agent.dropped_by_kill:
                agent.dropped_by_kill = False
                agent.returned = time.monotonic() - TRACE.t0
                back[index] += 1
            counts[base + node] += 1
            try:
                await agent.channel(ws, keepalive, health_s, phase)
            finally:
                counts[base + node] -= 1
                if killed.value and node == len(urls) - 1:
                    TRACE.start()
                    agent.dropped_by_kill = True
                    agent.slept = 0.0
                await ws.close()
        except (OSError, TimeoutError, WebSocketException, RuntimeError, ValueError, KeyError) as exc:
            causes[cause_base + CAUSES.index(cause(exc))] += 1
            if agent.dropped_by_kill and not steps.welcome:  # an attempt, not the end of a channel
                TRACE.rows.append([round(steps.gated - TRACE.t0, 3), node, step, cause(exc), *steps.row()])
            if isinstance(exc, ConnectionRefusedError):
                balancer.refused(node)
                retry = balancer.pick(node)
                if retry != node:  # the balancer's next upstream, within the same client connection
                    node = retry
                    continue
            log.debug("simulated agent %s: %s; reconnecting after backoff", agent.sim.device_id, exc)
        delay = agent.backoff.next_delay(loop.time())
        if agent.dropped_by_kill:
            agent.slept += delay
        await asyncio.sleep(delay)
        node = balancer.pick(node)  # the load balancer's pick: another node, one that has not refused lately


def worker(sims: list[Sim], ca: str, urls: list[str], counts: Any, causes: Any, phase: Any, reported: Any,
           killed: Any, back: Any, index: int, keepalive: float, health_s: float, concurrency: int, report: str) -> None:
    """A simulator process: its agents, until the parent terminates it; writes its acknowledged health
    samples to ``report`` when the parent asks (phase REPORT).

    One process stands in for thousands of devices that each have a CPU of their own, so its attempts
    (first connections and reconnects alike) pass a gate of ``concurrency`` handshakes in flight, and
    an agent's connect timeout starts at the gate. Without it, on a shared and loaded machine the
    simulator's own event loop starved: thousands of client handshakes crawled together past their
    15 s timeout on the client side (6,000 agents stalled at 1,896 connected), which real devices
    would not do. The nodes still see every attempt the simulators can make."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # asyncio gives every TLS connection a 256 KiB read buffer; a real agent holds one connection, a
    # simulator thousands (~370 KiB of RSS per simulated agent). 32 KiB, as the server does (server/app.py).
    asyncio.sslproto.SSLProtocol.max_size = min(asyncio.sslproto.SSLProtocol.max_size, 32 * 1024)

    async def main() -> None:
        gate = asyncio.Semaphore(concurrency)
        balancer = Balancer(len(urls))
        agents = [Agent(s, ca) for s in sims]
        tasks = [asyncio.create_task(agent_life(a, urls, i % len(urls), counts, index * len(urls), causes,
                                                index * len(CAUSES), keepalive, health_s, phase, killed, back, index,
                                                gate, balancer))
                 for i, a in enumerate(agents)]
        while phase.value != REPORT:
            await asyncio.sleep(0.2)
        acked = {a.sim.device_id: a.acked for a in agents if a.sim.health}
        pending = sum(len(a.pending) for a in agents)
        returns = [[round(a.returned, 3), round(a.slept, 3)] for a in agents if a.returned >= 0 or a.dropped_by_kill]
        Path(report).write_text(json.dumps({"acked": acked, "pending": pending, "attempts": TRACE.rows,
                                            "returns": returns, "others": OTHERS}))
        reported[index] = 1
        await asyncio.gather(*tasks)

    asyncio.run(main())
