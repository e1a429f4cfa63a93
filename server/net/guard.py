"""Per-connection enforcement: who waits, for how long, and what happens when the wait runs out.

aiohttp's :class:`~aiohttp.web_protocol.RequestHandler` has no header-read timeout (its keep-alive
timer starts when the TLS handshake ends and a slowloris client sending one header line at a time
was never closed). So each accepted connection gets a :class:`GuardedProtocol` between the
transport and aiohttp's handler. It forwards every call, holds the connection's place in the
:class:`~server.net.limits.Admission` pools and one timer:

* accept → first request's headers complete: ``header_timeout_s`` in all (TLS handshake included;
  asyncio's own ``ssl_handshake_timeout`` bounds the handshake alone);
* end of a response → next request's headers complete: ``idle_timeout_s``.

A request in progress (websockets included) has no timer here. :meth:`Gatekeeper.hook` wraps the
aiohttp server's request handler to learn when a request starts and ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from server.ops.metrics import register_collector, unregister_collector

from .limits import Admission, ConnectionLimits, Refusal, Waiting, address_key
from .metrics import ConnectionEvents
from .ratelog import CountingLog

if TYPE_CHECKING:
    from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

#: Closed and refused connections are summed up in one line per minute at most.
SUMMARY_INTERVAL_S = 60.0


class Gatekeeper:
    """The caps and timers of all listeners of a process (one per process: descriptors are per process)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.admission = Admission.for_limits(limits)
        self._connections: dict[RequestHandler, GuardedProtocol] = {}
        self._hooked: set[int] = set()  # servers whose handler is wrapped already (one runner, two sites)
        self.events = CountingLog(log, "connections closed or refused before showing a request",
                                  interval_s=SUMMARY_INTERVAL_S, level=logging.INFO,
                                  fields={"per_address_cap": limits.per_address, "cap": limits.total})
        self._figures = ConnectionEvents(self.events.total)
        register_collector(self._figures)
        log.info("connection limits", extra={f"unauthenticated_{k}": v for k, v in dataclasses.asdict(limits).items()})

    def hook(self, server: web.Server) -> None:
        """Wrap ``server``'s request handler so that a request ends its connection's wait and the end of a
        response starts the next one. Call before the server makes any connection's handler."""
        if id(server) in self._hooked:
            return
        self._hooked.add(id(server))
        handler = server.request_handler

        async def guarded(request: web.BaseRequest) -> web.StreamResponse:
            connection = self._connections.get(request.protocol)
            if connection is None:
                return await handler(request)
            connection.request_started()
            try:
                return await handler(request)
            finally:
                connection.request_finished()

        server.request_handler = guarded

    def admit(self, listener: str, peer: str, server: web.Server) -> GuardedProtocol | None:
        """A connection just accepted from ``peer``: its protocol, or None if it must be refused now."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        connection = GuardedProtocol(self, listener, server, loop)
        place = self.admission.admit(address_key(peer), now, connection.evict)
        if isinstance(place, Refusal):
            self.events.note(f"{listener}_refused_{place.value}")
            return None
        connection.place = place
        connection.wait_until(now + self.limits.header_timeout_s)
        return connection

    def connected(self, connection: GuardedProtocol, handler: RequestHandler) -> None:
        self._connections[handler] = connection

    def forget(self, connection: GuardedProtocol) -> None:
        if connection.inner is not None:
            self._connections.pop(connection.inner, None)

    def close(self) -> None:
        self.events.close()
        unregister_collector(self._figures)


def _nothing() -> None:
    """What evicting a connection that is already gone does."""


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's handler for one connection, behind the connection's place and timer (see the module)."""

    def __init__(self, gate: Gatekeeper, listener: str, server: web.Server, loop: asyncio.AbstractEventLoop) -> None:
        self._gate = gate
        self._server = server
        self._loop = loop
        self.listener = listener
        #: aiohttp's handler, made once the TLS handshake is done (most flood connections never get there).
        self.inner: RequestHandler | None = None
        self.place: Waiting = None  # type: ignore[assignment]  # set right after admission
        self.transport: asyncio.Transport | None = None
        #: The TLS handshake's task, until connection_made.
        self.handshake: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._served = 0
        self._gone = False

    def route(self, listener: str, server: web.Server) -> None:
        """Serve this connection with ``server``, counted as ``listener``: the one-port listener
        (server/net/sni.py) decides that from the ClientHello, before the TLS handshake."""
        self.listener = listener
        self._server = server

    # --- asyncio.Protocol, forwarded to aiohttp ---------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.handshake = None
        self.inner = inner = self._server()
        self._gate.connected(self, inner)
        inner.connection_made(transport)

    # The transport calls these only after connection_made.
    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[union-attr, func-returns-value]

    def pause_writing(self) -> None:
        self.inner.pause_writing()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.inner.resume_writing()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self._finished()
        if self.inner is not None:
            self.inner.connection_lost(exc)

    # --- the wait --------------------------------------------------------------------------

    def wait_until(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._expired)

    def stop_waiting(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._gate.admission.release(self.place)

    def request_started(self) -> None:
        self._served += 1
        self.stop_waiting()

    def request_finished(self) -> None:
        if self._gone or self.transport is None or self.transport.is_closing():
            return  # e.g. a websocket handler ending after its connection was lost
        now = self._loop.time()
        self._gate.admission.readmit(self.place, now)
        self.wait_until(now + self._gate.limits.idle_timeout_s)

    def handshake_failed(self, exc: BaseException) -> None:
        """The TLS handshake did not complete (asyncio closed the socket)."""
        self._finished()
        if isinstance(exc, ConnectionAbortedError | TimeoutError):
            self._gate.events.note(f"{self.listener}_handshake_timeout")
        elif not isinstance(exc, asyncio.CancelledError):
            self._gate.events.note(f"{self.listener}_handshake_failed", f"{type(exc).__name__}: {exc}")

    def _finished(self) -> None:
        """The connection is gone: leave the pools, and drop the references that would otherwise make
        cycles (task → exception → frame → this → task; place → evict → this → place). Under a flood
        those cycles were ~35 objects per connection for the collector, in full passes of 400 ms."""
        self._gone = True
        self.stop_waiting()
        self._gate.forget(self)
        self.handshake = None
        self.place.close = _nothing

    def evict(self) -> None:
        """Admission made room for a newer connection (our place is released already)."""
        self._gate.events.note(f"{self.listener}_evicted")
        self.abort()

    def _expired(self) -> None:
        self._timer = None
        kind = "idle_timeout" if self._served else "header_timeout"
        self._gate.events.note(f"{self.listener}_{kind}")
        self.stop_waiting()
        self.abort()

    def abort(self) -> None:
        """Close at once, without TLS close_notify: nothing is owed to a connection that showed nothing."""
        if self.transport is not None:
            self.transport.abort()
        elif self.handshake is not None:
            self.handshake.cancel()
