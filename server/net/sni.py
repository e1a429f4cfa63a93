"""One port for agents and the console: each connection's TLS context and application chosen by its SNI.

Why not an ``sni_callback`` that switches ``SSLObject.context``: that changes the certificate but not
the verify mode, which OpenSSL copied from the first context when the connection was made — tried:
a client without a certificate completed the handshake under the agent name. So the name is read
*before* TLS starts, by peeking (``MSG_PEEK``) at the ClientHello as an SNI-routing load balancer does
(:mod:`.client_hello`), and the whole handshake runs in the chosen context:

* the agent name (``agent_server_name``) → the agent context, a client certificate chaining to the
  org root REQUIRED (without one the handshake fails), and the agent application;
* any other name, or none → the console context, which never asks for a certificate (browsers never
  prompt), and the console application.

Each of the two contexts also refuses, in its own ``sni_callback``, a name that belongs to the
other (certs/tls.py ``single_port_contexts``): OpenSSL's reading of the ClientHello must agree with
this one's, or there is no handshake.

The peek is part of the connection's wait, as on the two-port listeners: the connection is admitted
at accept (caps, eviction), the ClientHello must be complete within the handshake timeout from
accept, and it is bounded (:data:`~.client_hello.MAX_STREAM_BYTES`): the kernel is asked to wake us
only once the bytes still missing have arrived (``SO_RCVLOWAT``), so a ClientHello sent a byte at a
time costs no wake-up per byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.web_runner import BaseRunner

from .client_hello import MAX_STREAM_BYTES, RECORD_HEADER, NeedMore, server_name
from .guard import Gatekeeper, GuardedProtocol
from .listener import AcceptLoop, GuardedSite

#: What the accept loop's connections count as before the ClientHello says where they go.
LISTENER = "single_port"
#: Fewer bytes than asked for although the kernel woke us (memory pressure): look again this much later.
SHORT_READ_RETRY_S = 0.02
_CLOSED = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)


@dataclass(frozen=True)
class Route:
    """Where a connection goes: its name in the connection figures, its application, its TLS context."""

    listener: str
    server: web.Server
    context: ssl.SSLContext


def _peer_closed(conn: socket.socket) -> bool:
    poller = select.poll()
    poller.register(conn.fileno(), _CLOSED)
    return bool(poller.poll(0))


async def peek_server_name(conn: socket.socket, readable: Callable[[socket.socket], Awaitable[None]]) -> str | None:
    """The server name of ``conn``'s ClientHello, read without consuming a byte (TLS starts from the
    first); ``readable`` waits until ``conn`` can be read. Raises :class:`~.client_hello.HelloError` or
    ``ConnectionError``; the caller bounds the time."""
    need = RECORD_HEADER
    try:
        while True:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, need)
            await readable(conn)
            data = conn.recv(MAX_STREAM_BYTES, socket.MSG_PEEK)
            if not data:
                raise ConnectionResetError("closed before its ClientHello")
            if len(data) < need:
                if _peer_closed(conn):
                    raise ConnectionResetError("closed in the middle of its ClientHello")
                await asyncio.sleep(SHORT_READ_RETRY_S)
                continue
            answer = server_name(data)
            if not isinstance(answer, NeedMore):
                return answer
            need = answer.total
    finally:
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


class SniAcceptLoop(AcceptLoop):
    """Accepts for both applications on one port; the ClientHello's name picks the route."""

    def __init__(self, sockets: list[socket.socket], gate: Gatekeeper, *, console: Route, agent: Route,
                 agent_name: str) -> None:
        super().__init__(sockets, gate, console.server, console.context, LISTENER)
        self._console = console
        self._agent = agent
        self._agent_name = agent_name.lower()

    async def _context_for(self, conn: socket.socket, connection: GuardedProtocol) -> ssl.SSLContext:
        name = await peek_server_name(conn, self._readable)
        route = self._agent if name == self._agent_name else self._console
        connection.route(route.listener, route.server)
        return route.context


class SniSite(GuardedSite):
    """The console runner's site on the one port; it hands agent connections to ``agent_runner``'s server."""

    __slots__ = ("_agent_context", "_agent_name", "_agent_runner")

    def __init__(self, runner: BaseRunner, host: str | None, port: int, *, gate: Gatekeeper,
                 console_context: ssl.SSLContext, agent_runner: BaseRunner, agent_context: ssl.SSLContext,
                 agent_name: str, backlog: int = 4096) -> None:
        super().__init__(runner, host, port, gate=gate, listener=LISTENER, ssl_context=console_context,
                         backlog=backlog)
        self._agent_runner = agent_runner
        self._agent_context = agent_context
        self._agent_name = agent_name

    def _accept_loop(self, sockets: list[socket.socket], server: web.Server) -> AcceptLoop:
        agent_server = self._agent_runner.server
        assert agent_server is not None and self._ssl_context is not None
        self._gate.hook(agent_server)
        return SniAcceptLoop(sockets, self._gate, console=Route("console", server, self._ssl_context),
                             agent=Route("agent", agent_server, self._agent_context), agent_name=self._agent_name)
