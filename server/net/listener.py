"""The listeners' accept loop, and the aiohttp site that uses it instead of ``loop.create_server``.

asyncio's server accepts every connection and starts its TLS handshake before any code of ours
sees it, so there is no place to refuse a connection cheaply, and when ``accept()`` fails for want
of descriptors it reports every failure through the loop's exception handler with a traceback
(544,275 of them in a minute, once). Here each readable listening socket is drained by
:meth:`AcceptLoop._accept`: a connection over a cap is reset at once (no handshake, no buffers),
an admitted one waits for its ClientHello, then for a handshake slot (:mod:`.slots`: while
connections wait for one, accepting pauses and the rest wait in the listen queue), and is handed to
``loop.connect_accepted_socket`` with the handshake timeout; a failing ``accept()`` pauses that
socket briefly and is counted in one log line per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import struct
from typing import Any

from aiohttp import web
from aiohttp.web_runner import BaseRunner, BaseSite

from .guard import Gatekeeper, GuardedProtocol
from .ratelog import CountingLog
from .slots import HandshakeSlots

log = logging.getLogger(__name__)

#: Connections taken per readiness event: small, so a flood's accepts interleave with the handshakes and
#: requests of real clients (128 let a request wait behind ~80 ms of accepting on a loaded machine).
ACCEPT_BATCH = 16
#: After a failed accept() (out of descriptors), wait this long before trying again; meanwhile
#: new connections wait in the kernel's listen queue rather than spinning the loop.
ACCEPT_RETRY_S = 0.25
ACCEPT_ERROR_INTERVAL_S = 10.0
_LINGER_RESET = struct.pack("ii", 1, 0)


def _reset(conn: socket.socket) -> None:
    """Close with a TCP reset: the peer learns at once, and no TIME_WAIT state stays behind."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    conn.close()


async def bind(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to (all interfaces when empty)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class AcceptLoop(asyncio.AbstractServer):
    """Accepts on ``sockets`` for one listener; everything after accept goes through ``gate``."""

    def __init__(self, sockets: list[socket.socket], gate: Gatekeeper, server: web.Server,
                 ssl_context: ssl.SSLContext | None, listener: str) -> None:
        self._sockets = sockets
        self._gate = gate
        self._server = server
        self._ssl = ssl_context
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        self._handshakes: set[asyncio.Task[None]] = set()
        self._retries: dict[socket.socket, asyncio.TimerHandle] = {}
        self._serving = False
        #: Accepting paused because connections wait for a handshake slot.
        self._held = False
        self.slots = HandshakeSlots(gate.limits.handshakes, gate.limits.handshake_hold_s, self._hold)
        self.errors = CountingLog(log, "accept() failed: new connections wait in the listen queue until it works "
                                  "again; out of file descriptors means the limit is too low for the connections "
                                  "held (raise LimitNOFILE, or lower max_unauthenticated)",
                                  interval_s=ACCEPT_ERROR_INTERVAL_S, fields={"listener": listener})

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        if self._serving:
            return
        self._serving = True
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _hold(self, held: bool) -> None:
        """Pause accepting while connections wait for a handshake slot; resume when none waits."""
        self._held = held
        if not self._serving:
            return
        for sock in self._sockets:
            if sock in self._retries or sock.fileno() < 0:
                continue  # paused after an accept() error: its timer resumes it
            if held:
                self._loop.remove_reader(sock.fileno())
            else:
                self._loop.add_reader(sock.fileno(), self._accept, sock)
        if held:
            self._gate.events.note(f"{self._listener}_accept_held")

    async def serve_forever(self) -> None:
        await self.start_serving()
        await asyncio.Event().wait()

    def close(self) -> None:
        """Stop accepting, close the listening sockets and every handshake still under way."""
        self._serving = False
        for sock in self._sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        for task in list(self._handshakes):
            task.cancel()
        self.errors.close()

    async def wait_closed(self) -> None:
        if self._handshakes:
            await asyncio.wait(list(self._handshakes))

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            if self._held:
                return  # a handshake slot freed between two readiness events will resume us
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the peer gave up while queued
            except OSError as exc:
                self.errors.note(errno.errorcode.get(exc.errno or 0, "error"), str(exc))
                self._pause(sock)
                return
            self._admit(conn, address)

    def _pause(self, sock: socket.socket) -> None:
        self._loop.remove_reader(sock.fileno())
        self._retries[sock] = self._loop.call_later(ACCEPT_RETRY_S, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        self._retries.pop(sock, None)
        if self._serving and not self._held:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _admit(self, conn: socket.socket, address: Any) -> None:
        peer = address[0] if isinstance(address, tuple) else str(address)
        connection = self._gate.admit(self._listener, peer, self._server)
        if connection is None:
            _reset(conn)
            return
        task = self._loop.create_task(self._handshake(conn, connection))
        connection.handshake = task
        self._handshakes.add(task)
        task.add_done_callback(lambda done: self._handshake_done(done, conn, connection))

    async def _handshake(self, conn: socket.socket, connection: GuardedProtocol) -> None:
        limits = self._gate.limits
        if self._ssl is None:
            await self._loop.connect_accepted_socket(lambda: connection, conn)
            return
        deadline = self._loop.time() + limits.handshake_timeout_s  # from accept, the wait for a slot included
        async with asyncio.timeout_at(deadline):
            await self._readable(conn)  # the ClientHello: an idle connection takes no slot
            context = await self._context_for(conn, connection)
            slot = await self.slots.acquire()
        try:
            await self._loop.connect_accepted_socket(lambda: connection, conn, ssl=context,
                                                     ssl_handshake_timeout=max(0.1, deadline - self._loop.time()),
                                                     ssl_shutdown_timeout=limits.handshake_timeout_s)
        finally:
            slot.release()

    async def _context_for(self, conn: socket.socket, connection: GuardedProtocol) -> ssl.SSLContext:
        """The TLS context of this connection's handshake: the listener's own here; the one-port listener
        (:mod:`.sni`) chooses it, and the application, by the ClientHello's server name."""
        assert self._ssl is not None
        return self._ssl

    async def _readable(self, conn: socket.socket) -> None:
        """Until ``conn`` has data (or EOF) to read."""
        ready: asyncio.Future[None] = self._loop.create_future()
        fd = conn.fileno()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_reader(fd, readable)
        try:
            await ready
        finally:
            self._loop.remove_reader(fd)

    def _handshake_done(self, task: asyncio.Task[None], conn: socket.socket, connection: GuardedProtocol) -> None:
        self._handshakes.discard(task)
        if connection.transport is not None:
            return  # connected: aiohttp has it now
        # Failed, timed out, evicted or cancelled (possibly before it began): the socket must not outlive it.
        conn.close()
        connection.handshake_failed(asyncio.CancelledError() if task.cancelled() else
                                    task.exception() or ConnectionError("handshake ended without a connection"))


class GuardedSite(BaseSite):
    """A TCP site whose connections go through :class:`AcceptLoop` and a :class:`Gatekeeper`."""

    __slots__ = ("_gate", "_host", "_listener", "_port")

    def __init__(self, runner: BaseRunner, host: str | None, port: int, *, gate: Gatekeeper, listener: str,
                 ssl_context: ssl.SSLContext | None = None, backlog: int = 4096) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._gate = gate
        self._listener = listener

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host or '0.0.0.0'}:{self._port}"  # noqa: S104 - a name, not a bind

    @property
    def port(self) -> int:
        """The bound port (the one the OS chose when 0 was asked for)."""
        if isinstance(self._server, AcceptLoop) and self._server.sockets:
            port: int = self._server.sockets[0].getsockname()[1]
            return port
        return self._port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._gate.hook(server)
        accept_loop = self._accept_loop(await bind(self._host, self._port, self._backlog), server)
        self._server = accept_loop
        await accept_loop.start_serving()

    def _accept_loop(self, sockets: list[socket.socket], server: web.Server) -> AcceptLoop:
        """The accept loop of this site's listening sockets (the one-port site makes its own)."""
        return AcceptLoop(sockets, self._gate, server, self._ssl_context, self._listener)
