"""The agent's control channel: connect out, say hello, stay alive, reconnect forever.

The sans-I/O :class:`~protocol.control.ControlChannel` holds the protocol state; this
module only feeds it frames, flushes what it wants to send, wakes it at its deadlines,
and dispatches application messages through a table of handlers that feature modules
(inventory, sessions, tasks) register.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from certs import tls
from common.files import atomic_write_all
from common.proxy import websocket_proxy
from common.version import __version__
from protocol import limits
from protocol.control import CloseCode, ControlChannel
from protocol.jpeg_tables import CAPABILITY as LEAN_JPEG
from protocol.messages import CertRenewRequest, CertRenewResponse, Error, Hello, Message, Welcome
from protocol.stream import BATCH_CAPABILITY
from protocol.version import MAX_VERSION, MIN_VERSION

from . import recovery
from .backoff import Backoff
from .config import AgentConfig
from .state import AgentState

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
Handler = Callable[["AgentClient", Any], Awaitable[None]]

#: "health.seq": this agent understands ``welcome.health_seq`` (the server only sends it then);
#: "authority": it takes ``authority.update`` and answers unattended offers with ``session.challenge``;
#: "health.partial"/"inventory.partial": it reads the ``rejected`` list of ``health.ack``/``inventory.ack``;
#: "wake": it relays Wake-on-LAN packets to its own networks (agent/wake.py);
#: "update": it takes ``update.offer`` and reports ``update.status`` (agent/update/).
#: "inventory.policy.push": it follows a changed personal-data policy sent with ``inventory.request``.
#: "survey": it takes ``survey.ask`` (agent/help/survey.py); older agents are not asked.
#: "stream.jpeg-lean": it reads ``session.offer.jpeg_lean`` and can send JPEGs without their standard tables.
#: "stream.batched": it reads ``session.offer.batched`` and can send an update's records together.
CAPABILITIES = ["inventory", "health", "health.seq", "session", "tasks", "authority", "health.partial",
                "inventory.partial", "wake", "update", "inventory.policy", "tools",
                "inventory.policy.push", "survey", LEAN_JPEG, BATCH_CAPABILITY]
Hook = Callable[["AgentClient"], Awaitable[None]]


class AgentRevoked(Exception):
    """The server says this device is revoked; the agent must stop."""


class AgentClient:
    def __init__(self, state: AgentState, config: AgentConfig | None = None, *,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.state = state
        self.config = config or AgentConfig(state_dir=state.directory)
        self.wall_clock = wall_clock
        self.device_id = state.device_id
        self.handlers: dict[type[Message], Handler] = {CertRenewResponse: _on_renewed}
        self.on_ready: list[Hook] = []
        #: Told of every server ``error`` naming a message (``in_reply_to``), besides the ``Error`` handler.
        self.error_listeners: list[Callable[[AgentClient, Error], Awaitable[None]]] = []
        #: Asked before each hello for capabilities known only at run time (the screen backend, agent/runtime.py).
        self.capability_sources: list[Callable[[], Awaitable[list[str]]]] = []
        #: Started once when :meth:`run` starts, online or not, and cancelled when it returns
        #: (e.g. health sampling): the client owns them, so nothing outlives the agent.
        self.background: list[Hook] = []
        #: Awaited once when :meth:`run` returns, after the background tasks ended (close files).
        self.on_stop: list[Hook] = []
        self.ready = asyncio.Event()
        self.connections = 0
        self.welcome: Welcome | None = None
        self._ws: ClientConnection | None = None
        self._channel: ControlChannel | None = None
        self._send_lock = asyncio.Lock()
        self._pending_key: Any = None
        self._session_tasks: set[asyncio.Task[None]] = set()
        self.backoff = Backoff(cap_s=self.config.backoff_cap_s, reset_after_s=self.config.backoff_reset_s)

    async def _run_time_capabilities(self) -> list[str]:
        """What :attr:`capability_sources` say, each bounded; one that fails or hangs adds nothing."""
        extra: list[str] = []
        for source in self.capability_sources:
            try:
                extra += await asyncio.wait_for(source(), 15)
            except Exception as exc:
                log.warning("a capability could not be determined: %s", exc)
        return extra[: limits.MAX_SMALL_LIST - len(CAPABILITIES)]

    def register(self, message_type: type[M], handler: Callable[[AgentClient, M], Awaitable[None]]) -> None:
        self.handlers[message_type] = handler

    # --- sending ----------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Send on the live channel; raises ConnectionError when there is none or it closes meanwhile."""
        channel, ws = self._channel, self._ws
        if channel is None or ws is None or not self.ready.is_set():
            raise ConnectionError("control channel is not connected")
        channel.send(message, asyncio.get_running_loop().time())
        try:
            await self._flush(channel, ws)
        except ConnectionClosed as exc:  # the websocket's own error, which is no ConnectionError
            raise ConnectionError(f"control channel closed: {exc}") from exc

    async def _flush(self, channel: ControlChannel, ws: ClientConnection) -> None:
        async with self._send_lock:
            for frame in channel.data_to_send():
                await ws.send(frame)

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run a task tied to the current connection (cancelled when it drops)."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._session_tasks.add(task)
        task.add_done_callback(self._session_tasks.discard)

    # --- connection loop --------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        return tls.agent_client_context(self.state.ca_path, self.state.cert_path, self.state.key_path,
                                        server_name=self.state.agent_server_name)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Connect and reconnect until ``stop`` is set; raises :class:`AgentRevoked`.

        The :attr:`background` tasks run for as long as this does; :attr:`on_stop` hooks run at the end.
        """
        stop = stop or asyncio.Event()
        background = [asyncio.ensure_future(factory(self)) for factory in self.background]
        try:
            await self._reconnect_loop(stop)
        finally:
            for task in background:
                task.cancel()
            for result in await asyncio.gather(*background, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("background task failed", exc_info=result)
            for hook in self.on_stop:
                try:
                    await hook(self)
                except Exception:
                    log.exception("stop hook failed")

    async def _reconnect_loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                # Its stored validity says the certificate ended (off too long): prove the key, get a new one.
                await recovery.recover_if_expired(self.state, self.wall_clock(), proxy=self.config.proxy)
                if await self._connect_once(stop):
                    continue  # clean reconnect (renewed certificate)
            except AgentRevoked:
                raise
            except recovery.RecoveryFailed:
                pass  # logged by recovery; back off like any failed connection
            except InvalidStatus as exc:
                body = exc.response.body or b""
                if exc.response.status_code == 403 and b"revoked" in body:
                    raise AgentRevoked("the server refused this device: it has been revoked") from exc
                log.warning("server refused the connection", extra={"status": exc.response.status_code,
                                                                     "reason": body[:200].decode(errors="replace")})
            except (OSError, TimeoutError, WebSocketException) as exc:
                log.warning("control channel failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            delay = self.backoff.next_delay(loop.time())
            log.info("reconnecting", extra={"in_s": round(delay, 2), "attempt": self.backoff.failures})
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                continue

    async def _connect_once(self, stop: asyncio.Event) -> bool:
        """One connection's life. True if it ended by our choice (reconnect at once)."""
        loop = asyncio.get_running_loop()
        url = self.state.agent_url
        capabilities = CAPABILITIES + await self._run_time_capabilities()  # before connecting: the server waits
        async with connect(url, ssl=self.ssl_context(), max_size=limits.MAX_CONTROL_MESSAGE_BYTES,
                           proxy=websocket_proxy(self.config.proxy, url), compression=None, ping_interval=None,
                           open_timeout=15, close_timeout=2) as ws:
            channel = ControlChannel("agent", now=loop.time(), keepalive_s=20.0)
            self._ws, self._channel = ws, channel
            self.connections += 1
            channel.send(Hello(min_version=MIN_VERSION, max_version=MAX_VERSION, agent_version=__version__,
                               device_id=self.device_id, capabilities=capabilities), loop.time())
            await self._flush(channel, ws)
            stop_wait = asyncio.ensure_future(stop.wait())
            try:
                return await self._pump(ws, channel, stop_wait)
            finally:
                stop_wait.cancel()
                self.ready.clear()
                self._ws = self._channel = None
                for task in list(self._session_tasks):
                    task.cancel()

    async def _pump(self, ws: ClientConnection, channel: ControlChannel, stop_wait: asyncio.Future[Any]) -> bool:
        loop = asyncio.get_running_loop()
        while True:
            timeout = max(0.0, channel.next_deadline() - loop.time())
            recv = asyncio.ensure_future(ws.recv())
            done, _ = await asyncio.wait({recv, stop_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if stop_wait in done:
                recv.cancel()
                await ws.close(int(CloseCode.GOING_AWAY), "agent stopping")
                return True
            if recv not in done:
                recv.cancel()
                channel.tick(loop.time())
            else:
                try:
                    data = recv.result()
                except ConnectionClosed as exc:
                    self._raise_if_revoked(exc)
                    log.info("control channel closed by server",
                             extra={"code": exc.rcvd.code if exc.rcvd else None,
                                    "reason": exc.rcvd.reason if exc.rcvd else ""})
                    return False
                if isinstance(data, bytes):
                    log.warning("ignored binary frame on control channel")
                    continue
                channel.receive(data, loop.time())
                for event in channel.events_received():
                    await self._dispatch(event)
            await self._flush(channel, ws)
            if channel.close_request is not None:
                await ws.close(int(channel.close_request.code), channel.close_request.reason)
                return channel.close_request.code == CloseCode.NORMAL

    def _raise_if_revoked(self, exc: ConnectionClosed) -> None:
        if exc.rcvd is not None and exc.rcvd.code == CloseCode.REVOKED:
            raise AgentRevoked(f"the server closed the channel: {exc.rcvd.reason or 'device revoked'}") from exc

    async def _dispatch(self, message: Message) -> None:
        if isinstance(message, Welcome):
            self.welcome = message
            self.backoff.connected(asyncio.get_running_loop().time())
            self.ready.set()
            log.info("connected", extra={"device_id": self.device_id, "protocol": message.version})
            await self._maybe_renew()
            for hook in self.on_ready:
                self.spawn(hook(self))
            return
        if isinstance(message, Error):
            log.warning("server reported an error", extra={"code": message.code, "detail": message.message,
                                                           "in_reply_to": message.in_reply_to})
            if message.code == "revoked":
                raise AgentRevoked(f"the server says: {message.message}")
            error_handler = self.handlers.get(Error)  # a feature waiting on the refused request (reporting)
            if error_handler is not None and message.in_reply_to is not None:
                await error_handler(self, message)
            for listener in self.error_listeners if message.in_reply_to is not None else ():
                await listener(self, message)
            return
        handler = self.handlers.get(type(message))
        if handler is None:
            log.warning("no handler for message", extra={"type": message.type_name()})
            if self._channel is not None:
                self._channel.send(Error(code="unsupported", message=f"agent does not handle {message.type_name()}",
                                         in_reply_to=message.id), asyncio.get_running_loop().time())
            return
        try:
            await handler(self, message)
        except Exception:
            log.exception("handler failed", extra={"type": message.type_name()})

    # --- certificate renewal ----------------------------------------------------------------

    def renewal_due(self) -> bool:
        """Two-thirds of the certificate's life has passed (or the server asks for renewal)."""
        if self.welcome is not None and self.welcome.cert_renew_due:
            return True
        validity = self.state.certificate_validity()
        if validity is None:  # state written before validity was recorded: read the certificate once
            from certs.pki import load_certificate

            cert = load_certificate(self.state.cert_path)
            validity = (cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())
            self.state.record_certificate_validity(*validity)
        not_before, not_after = validity
        return self.wall_clock().timestamp() >= not_before + (not_after - not_before) * 2 / 3

    async def _maybe_renew(self) -> None:
        # cryptography is imported only here and on renewal: an idle agent never needs it.
        if self.welcome is None or not self.renewal_due():
            return
        from certs.pki import build_csr, generate_device_key

        self._pending_key = generate_device_key()
        csr = build_csr(self._pending_key).decode()
        log.info("requesting certificate renewal")
        assert self._channel is not None
        self._channel.send(CertRenewRequest(csr=csr), asyncio.get_running_loop().time())


async def _on_renewed(client: AgentClient, message: CertRenewResponse) -> None:
    from certs.errors import CertError
    from certs.pki import check_issued_chain, load_certificate, private_key_pem

    if client._pending_key is None:
        log.warning("unsolicited certificate renewal ignored")
        return
    state = client.state
    try:  # a chain that does not lead to the pinned root would lock this device out: keep the old one
        cert = check_issued_chain(message.certificate.encode(), load_certificate(state.ca_path),
                                  client._pending_key.public_key())
    except CertError as exc:
        log.error("renewed certificate refused; keeping the current one", extra={"reason": str(exc)})
        client._pending_key = None
        return
    atomic_write_all([(state.key_path, private_key_pem(client._pending_key), 0o600),
                      (state.cert_path, message.certificate.encode(), 0o644)])
    client._pending_key = None
    state.record_certificate_validity(cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())
    log.info("certificate renewed; reconnecting with it", extra={"expires": cert.not_valid_after_utc.isoformat()})
    if client._channel is not None:
        client._channel.close(CloseCode.NORMAL, "certificate renewed")
