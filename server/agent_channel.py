"""The agent control channel endpoint: ``wss://…:8443/agent`` (mutual TLS).

After the TLS handshake (client certificate from the org CA, checked by OpenSSL) the
peer certificate is matched against the device registry: known device, not revoked,
serial current. Then a sans-I/O :class:`~protocol.control.ControlChannel` drives the
conversation; application messages are dispatched through a table of small handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import WSMsgType, web
from cryptography import x509

from certs.pki import certificate_serial_hex, device_id_from_certificate
from common.version import __version__
from protocol import limits, screen_backend
from protocol.control import ChannelState, CloseCode, ControlChannel
from protocol.errors import UnsupportedVersion
from protocol.messages import Error, Hello, Message, Welcome
from protocol.version import negotiate

from . import devices

if TYPE_CHECKING:
    from .app import HelplineServer

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
Handler = Callable[["AgentConnection", Any], Awaitable[None]]
#: Adds fields to a device's ``welcome`` (called after hello, with the connection).
WelcomeFields = Callable[["AgentConnection"], Awaitable[dict[str, Any]]]


#: How long one frame to an agent may wait for the agent to take it before the connection is cut.
SEND_STALL_S = 30.0
#: How long a close (revoked, superseded, shutting down) waits for the peer before the connection is cut.
CLOSE_WAIT_S = 2.0


async def write_or_cut(conn: AgentConnection, frame: str) -> None:
    """One frame to ``conn``'s peer within :data:`SEND_STALL_S`, else the connection is aborted and
    ConnectionResetError raised (agents and support clients alike)."""
    try:
        async with asyncio.timeout(SEND_STALL_S):
            await conn.ws.send_str(frame)
    except TimeoutError:
        conn.abort(f"it took no data for {SEND_STALL_S} s")
        raise ConnectionResetError("the connection stalled and was cut off") from None


class ChannelNotOpen(ConnectionError):
    """A message for a channel that is closed or not past its handshake: to the caller, a connection gone (the
    device is served again when a channel of it is ready — the ``on_agent_ready`` hooks)."""


class AgentConnection:
    """One live, authenticated control channel."""

    def __init__(self, server: HelplineServer, ws: web.WebSocketResponse, device_id: str, group: str,
                 certificate: x509.Certificate, transport: asyncio.Transport | None = None) -> None:
        self.server = server
        self.ws = ws
        #: Aborted (no flush, no TLS close_notify) when the agent stops taking data: see :data:`SEND_STALL_S`.
        self.transport = transport
        self.device_id = device_id
        self.group = group
        self.certificate = certificate
        self.loop = asyncio.get_running_loop()
        self.channel = ControlChannel("server", now=self.loop.time(), keepalive_s=server.config.keepalive_s)
        self.hello: Hello | None = None
        self._send_lock = asyncio.Lock()
        #: Keeps one authority update's parts together (server/authority/push.py); this connection's own, so a
        #: push stuck on a dead connection never delays the device's next one.
        self.push_lock = asyncio.Lock()

    @property
    def certificate_serial(self) -> str:
        """What a session's tunnel token is bound to (a support client, with no certificate, names itself)."""
        return certificate_serial_hex(self.certificate)

    async def send(self, message: Message) -> None:
        """Queue a message to the agent and flush it (:class:`ChannelNotOpen` when the channel cannot take it)."""
        state = self.channel.state
        if state is ChannelState.CLOSED or (state is not ChannelState.READY and not isinstance(message, Error)):
            raise ChannelNotOpen(f"the control channel is {state.name.lower()}: {message.type_name()} not sent")
        self.channel.send(message, self.loop.time())
        await self.flush()

    async def flush(self) -> None:
        """Send what the channel queued. An agent that takes no frame for :data:`SEND_STALL_S` (it stopped
        reading, or its link is dead without a reset) is cut off, so a push to it — and everything queued
        behind its send lock — ends instead of waiting for ever. Only a frame's own write is timed: a long
        update whose frames keep going out is progress, not a stall."""
        async with self._send_lock:
            for frame in self.channel.data_to_send():
                await write_or_cut(self, frame)
            request = self.channel.close_request
        if request is not None and not self.ws.closed:
            await self._close_ws(int(request.code), request.reason)

    def abort(self, why: str) -> None:
        """Drop the connection at once (the agent reconnects with its backoff)."""
        log.warning("cut off an agent connection", extra={"device_id": self.device_id, "reason": why})
        if self.transport is not None:
            self.transport.abort()

    async def close(self, code: CloseCode, reason: str) -> None:
        """Close with ``code`` — a courtesy bounded by :data:`CLOSE_WAIT_S` (a revoked, superseded or stalled
        peer does not hold its caller: past it the connection is aborted). Not behind the send lock: a
        push in progress to this connection ends when its transport closes."""
        if not self.ws.closed:
            self.channel.reject(code, reason, self.loop.time())
            await self._close_ws(int(code), reason)

    async def _close_ws(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await self.ws.close(code=code, message=reason.encode()[:120])
        except TimeoutError:
            self.abort(f"no answer to its close ({code}) within {CLOSE_WAIT_S} s")

    async def reply_error(self, code: str, message: str, in_reply_to: str | None) -> None:
        await self.send(Error(code=code, message=message, in_reply_to=in_reply_to))


class AgentHandlers:
    """Message type → handler table. Feature modules register their handlers here."""

    def __init__(self) -> None:
        self._table: dict[type[Message], Handler] = {}
        #: Feature providers of extra ``welcome`` fields (e.g. the CMDB's highest stored health seq).
        self.welcome_fields: list[WelcomeFields] = []

    def register(self, message_type: type[M], handler: Callable[[AgentConnection, M], Awaitable[None]]) -> None:
        if message_type in self._table:
            raise ValueError(f"handler for {message_type.type_name()} already registered")
        self._table[message_type] = handler

    def replace(self, message_type: type[M], handler: Callable[[AgentConnection, M], Awaitable[None]]) -> Handler:
        """Swap the handler of an already registered type and return the previous one (tests wrap it)."""
        previous = self._table.get(message_type)
        if previous is None:
            raise KeyError(f"no handler registered for {message_type.type_name()}")
        self._table[message_type] = handler
        return previous

    def get(self, message_type: type[Message]) -> Handler | None:
        return self._table.get(message_type)


def peer_certificate(request: web.Request) -> x509.Certificate | None:
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


async def authenticate_device(server: HelplineServer, request: web.Request) -> tuple[str, dict[str, Any],
                                                                                    x509.Certificate]:
    """Return (device id, registry row, cert) or raise an HTTP 401/403 that says why."""
    cert = peer_certificate(request)
    if cert is None:
        raise web.HTTPUnauthorized(text="client certificate required")
    device_id = device_id_from_certificate(cert)
    try:
        row = await devices.check_presented_certificate(server.db, device_id, certificate_serial_hex(cert))
    except devices.CertificateRejected as exc:
        log.warning("agent refused", extra={"device_id": device_id, "reason": str(exc), "peer": request.remote})
        raise web.HTTPForbidden(text=str(exc)) from exc
    return device_id, row, cert


async def control_channel(request: web.Request) -> web.StreamResponse:
    server: HelplineServer = request.app[SERVER_KEY]
    device_id, row, cert = await authenticate_device(server, request)
    ws = web.WebSocketResponse(max_msg_size=limits.MAX_CONTROL_MESSAGE_BYTES, compress=False, autoping=True)
    await ws.prepare(request)
    conn = AgentConnection(server, ws, device_id, row["group_name"], cert, request.transport)
    try:
        await _serve(server, conn)
    finally:
        if server.connections.get(device_id) is conn:
            server.connections.remove(conn)
            await server.presence.disconnected(device_id)  # retried by the presence sweep if it fails
            log.info("agent offline", extra={"device_id": device_id})
    return ws


async def _serve(server: HelplineServer, conn: AgentConnection) -> None:
    ws, channel, loop = conn.ws, conn.channel, conn.loop
    while not ws.closed and channel.close_request is None:
        timeout = max(0.0, channel.next_deadline() - loop.time())
        try:
            msg = await ws.receive(timeout=timeout)
        except TimeoutError:
            channel.tick(loop.time())
            await conn.flush()
            continue
        if msg.type == WSMsgType.TEXT:
            refused = channel.errors_received
            channel.receive(msg.data, loop.time())
            if channel.errors_received > refused:  # answered with an error by the channel; logged here
                log.warning("invalid message from agent refused", extra={
                    "device_id": conn.device_id, "bytes": len(msg.data), "type": _type_of(msg.data)})
        elif msg.type == WSMsgType.BINARY:
            await conn.reply_error("invalid", "binary frames are not allowed on the control channel", None)
            continue
        elif msg.type == WSMsgType.ERROR:
            log.warning("control channel error", extra={"device_id": conn.device_id, "error": str(ws.exception())})
            return
        else:  # CLOSE, CLOSING, CLOSED
            return
        for event in channel.events_received():
            await _dispatch(server, conn, event)
        await conn.flush()
    await conn.flush()


def _type_of(data: str) -> str:
    """The ``type`` a refused frame claimed, for the log (at most 64 printable characters)."""
    found = re.search(r'"type"\s*:\s*"([^"]{0,64})', data[:4096])
    return "".join(c for c in found.group(1) if c.isprintable()) if found else "?"


async def _dispatch(server: HelplineServer, conn: AgentConnection, message: Message) -> None:
    if isinstance(message, Hello):
        await _accept_hello(server, conn, message)
        return
    handler = server.agent_handlers.get(type(message))
    if handler is None:
        await conn.reply_error("unsupported", f"the server does not handle {message.type_name()}", message.id)
        return
    try:
        await handler(conn, message)
    except ChannelNotOpen:
        # The channel closed while the message was handled (superseded by the agent's new connection, a
        # keepalive timeout, a revocation): what the handler stored stays, its answer has nowhere to go,
        # and the agent sends again what it was not answered for.
        log.info("answer not sent: the control channel closed while the message was handled",
                 extra={"device_id": conn.device_id, "type": message.type_name()})
    except Exception:
        log.exception("handler failed", extra={"device_id": conn.device_id, "type": message.type_name()})
        with contextlib.suppress(ChannelNotOpen):
            await conn.reply_error("internal", "the server could not process this message", message.id)


async def _accept_hello(server: HelplineServer, conn: AgentConnection, hello: Hello) -> None:
    now = conn.loop.time()
    if hello.device_id != conn.device_id:
        conn.channel.reject(CloseCode.UNAUTHORIZED, "device id does not match the certificate", now)
        return
    try:
        version = negotiate(hello.min_version, hello.max_version)
    except UnsupportedVersion as exc:
        conn.channel.reject(CloseCode.PROTOCOL, exc.message, now)
        return
    conn.hello = hello
    superseded = server.connections.add(conn)
    if superseded is not None:  # bounded (CLOSE_WAIT_S): the old link is often the dead one
        await superseded.close(CloseCode.SUPERSEDED, "a newer connection from this device replaced this one")
    await devices.mark_hello(server.db, conn.device_id, agent_version=hello.agent_version,
                             screen_backend=screen_backend.from_capabilities(hello.capabilities),
                             screen_view_only=screen_backend.VIEW_ONLY in hello.capabilities)
    checksums = await server.inventory_checksums(conn.device_id)
    extra: dict[str, Any] = {}
    for provider in server.agent_handlers.welcome_fields:
        extra.update(await provider(conn))
    if conn.channel.state is ChannelState.CLOSED:
        # Closed while the hello was handled (a newer connection from the device superseded this one, or it
        # was cut off): the device is served on the connection that replaced it.
        log.info("hello not answered: the connection closed meanwhile", extra={"device_id": conn.device_id})
        return
    conn.channel.send(
        Welcome(version=version, server_version=__version__, keepalive_s=server.config.keepalive_s,
                inventory_checksums=checksums, **extra),
        now,
    )
    log.info("agent online", extra={"device_id": conn.device_id, "agent_version": hello.agent_version})
    for hook in server.on_agent_ready:
        await hook(conn)


SERVER_KEY: web.AppKey[HelplineServer] = web.AppKey("helpline_server")
