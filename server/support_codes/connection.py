"""The support client's two websockets on the console port, and its stand-in for a control channel.

Why the console port (8444) and not the agent port (8443): the agent listener *requires* a
client certificate in the TLS handshake (an unenrolled machine cannot even finish it), and the
console listener is the one already open to the outside with server-only TLS, the connection
caps of :mod:`server.net` and the per-address accounting the redeem limits need.

* ``GET /api/v1/support/connect`` — one redeem attempt (:mod:`.redeem`), then the socket is the
  client's :class:`SupportConnection`: registered like an agent's control channel under the
  support client's id, so the session driver offers, hears answers and ends sessions exactly as
  for an enrolled device. It accepts ``session.answer`` and ``session.end`` for its one session
  and nothing else, and closes once that session is over or ``wait_min`` passes without one.
* ``GET /api/v1/support/tunnel/{session_id}`` — the session tunnel, with the single-use tunnel
  token of the offer (bound to the support client's id), relayed like an agent's tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from protocol import codec
from protocol.control import CloseCode
from protocol.errors import RemoteProtocolError
from protocol.messages import Error, Message
from protocol.session import TUNNEL_TOKEN_HEADER, EndReason, SessionAnswer, SessionEnd, SessionOffer
from protocol.support import (
    CLOSE_RATE_LIMITED,
    CLOSE_REFUSED,
    MAX_SUPPORT_MESSAGE_BYTES,
    SupportRedeem,
    SupportWelcome,
)
from server import api
from server.agent_channel import AgentConnection, write_or_cut
from server.errors import ApiError
from server.sessions import SessionDriver

from . import repository
from .redeem import Redeemer

if TYPE_CHECKING:
    from server.app import HelplineServer

log = logging.getLogger(__name__)

#: The redeem frame must arrive this soon after the websocket opens.
REDEEM_WAIT_S = 10.0


class SupportConnection(AgentConnection):
    """A support client's socket as the session driver sees a device: ``send``, ``close``, an id.

    No certificate and no control channel: ``certificate_serial`` is a name the tunnel token is
    bound to, and ``hello`` stays None, so no feature that looks for a capability (documents,
    tasks, updates, personal data) ever sends it anything.
    """

    def __init__(self, server: HelplineServer, ws: web.WebSocketResponse, client_id: str, group: str,
                 transport: asyncio.Transport | None = None) -> None:
        # Deliberately not AgentConnection.__init__: there is no certificate and no ControlChannel here.
        self.server = server
        self.ws = ws
        self.transport = transport
        self.device_id = client_id
        self.group = group
        self.loop = asyncio.get_running_loop()
        self.hello = None
        self._send_lock = asyncio.Lock()
        #: Set when the session's end went out (the socket then closes).
        self.ended = asyncio.Event()
        #: The one session was offered: the client no longer waits for a technician.
        self.offered = False

    @property
    def certificate_serial(self) -> str:
        return f"support:{self.device_id}"

    async def send(self, message: Message) -> None:
        async with self._send_lock:
            if self.ws.closed:
                raise ConnectionResetError("the support client is gone")
            await write_or_cut(self, codec.encode(message))  # one that stopped reading is cut off
        if isinstance(message, SessionOffer):
            self.offered = True
        if isinstance(message, SessionEnd):
            self.ended.set()

    async def flush(self) -> None:
        return None

    async def close(self, code: CloseCode, reason: str) -> None:
        if not self.ws.closed:
            await self._close_ws(int(code), reason)


def routes(server: HelplineServer, sessions: SessionDriver, redeemer: Redeemer) -> list[api.Route]:
    async def connect(request: web.Request) -> web.StreamResponse:
        """Redeem a support code (websocket; one attempt per connection)"""
        address = request.remote or ""
        if not await redeemer.admit(address):
            raise ApiError(429, "rate_limited", "too many support-code attempts; try again in a minute")
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_SUPPORT_MESSAGE_BYTES, autoping=True,
                                   heartbeat=20)
        await ws.prepare(request)
        redeem = await _first_frame(ws)
        if redeem is None:
            await redeemer.audit_malformed(address)
            await ws.close(code=CLOSE_REFUSED, message=b"expected support.redeem")
            return ws
        result = await redeemer.redeem(redeem.code, address=address, hostname=redeem.hostname, user=redeem.user)
        if result.outcome != "ok" or result.code is None:
            await ws.send_str(codec.encode(Error(code=f"code_{result.outcome}", message=_REFUSALS[result.outcome],
                                                 in_reply_to=redeem.id)))
            await ws.close(code=CLOSE_RATE_LIMITED if result.outcome == "rate_limited" else CLOSE_REFUSED,
                           message=b"support code refused")
            return ws
        conn = SupportConnection(server, ws, result.client_id, result.code["group_name"], request.transport)
        server.connections.add(conn)
        wait_s = redeemer.settings.wait_min * 60.0
        try:
            await conn.send(SupportWelcome(client_id=result.client_id, technician=result.code["technician_user"],
                                           group=result.code["group_name"], wait_s=wait_s))
            await _serve(conn, sessions, time.monotonic() + wait_s)
        finally:
            server.connections.remove(conn)
            await _client_gone(server, sessions, conn)
        return ws

    async def tunnel(request: web.Request) -> web.StreamResponse:
        """A support client's session tunnel (websocket, single-use tunnel token)"""
        session_id = request.match_info["session_id"]
        live = sessions.live.get(session_id)
        conn = server.connections.get(live.device_id) if live is not None else None
        if live is None or not isinstance(conn, SupportConnection):
            raise ApiError(403, "unknown_session", "no such support session")
        session = await sessions.claim_tunnel(session_id, request.headers.get(TUNNEL_TOKEN_HEADER, ""),
                                              conn.device_id, conn.certificate_serial)
        ws = web.WebSocketResponse(compress=False, max_msg_size=sessions.settings.max_message_bytes, autoping=True)
        await ws.prepare(request)
        relay = sessions.relay_for(session)
        await sessions.started(session)
        await relay.serve("agent", ws)
        return ws

    return [
        api.Route("GET", "/api/v1/support/connect", connect, api.PUBLIC, websocket=True,
                  summary="Redeem a support code (websocket, no enrollment)",
                  description="The first frame is `support.redeem` {code}; the answer `support.welcome` or an "
                              "`error` and a close. Rate-limited per address and globally (429).",
                  errors={429: "Too many attempts from this address or in all"}),
        api.Route("GET", "/api/v1/support/tunnel/{session_id}", tunnel, api.PUBLIC, websocket=True,
                  summary="A support client's session tunnel (websocket, single-use tunnel token)",
                  errors={403: "Tunnel token refused"}),
    ]


_REFUSALS = {
    "unknown": "no such support code",
    "expired": "this support code has expired; ask for a new one",
    "reused": "this support code was already used; ask for a new one",
    "revoked": "this support code was withdrawn",
    "rate_limited": "too many attempts",
}


async def _first_frame(ws: web.WebSocketResponse) -> SupportRedeem | None:
    try:
        msg = await ws.receive(timeout=REDEEM_WAIT_S)
    except TimeoutError:
        return None
    if msg.type != WSMsgType.TEXT:
        return None
    try:
        decoded = codec.decode(msg.data, max_bytes=MAX_SUPPORT_MESSAGE_BYTES)
    except RemoteProtocolError:
        return None
    return decoded if isinstance(decoded, SupportRedeem) else None


async def _serve(conn: SupportConnection, sessions: SessionDriver, wait_until: float) -> None:
    """Answers and ends of the one session, until it is over, the wait runs out or the client goes."""
    ws = conn.ws
    ended = asyncio.ensure_future(conn.ended.wait())
    try:
        while not ws.closed:
            waiting = not conn.offered
            timeout = max(0.0, wait_until - time.monotonic()) if waiting else None
            if waiting and timeout == 0.0:
                await conn.close(CloseCode.TIMEOUT, "no technician connected in time")
                return
            receive = asyncio.ensure_future(ws.receive())
            done, _ = await asyncio.wait({receive, ended}, timeout=min(timeout, 5.0) if timeout else 5.0,
                                         return_when=asyncio.FIRST_COMPLETED)
            if ended in done:
                receive.cancel()
                await conn.close(CloseCode.NORMAL, "session over")
                return
            if receive not in done:
                receive.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receive
                continue
            msg = receive.result()
            if msg.type != WSMsgType.TEXT:
                return  # close, error, or a binary frame the support socket never carries
            try:
                message = codec.decode(msg.data, max_bytes=MAX_SUPPORT_MESSAGE_BYTES)
            except RemoteProtocolError as exc:
                await conn.reply_error(exc.code, exc.message, exc.in_reply_to)
                continue
            if isinstance(message, SessionAnswer):
                await sessions.on_answer(conn, message)
            elif isinstance(message, SessionEnd):
                await sessions.on_agent_end(conn, message)
                await conn.close(CloseCode.NORMAL, "session over")
                return
            else:
                await conn.reply_error("unsupported", f"{message.type_name()} is not accepted from a support client",
                                       message.id)
    finally:
        ended.cancel()


async def _client_gone(server: HelplineServer, sessions: SessionDriver, conn: SupportConnection) -> None:
    """The client left: its session (if still running) ends, and the client row says when — each step on its
    own, so one that fails (logged) does not leave the others undone."""
    for live in list(sessions.live.values()):
        if live.device_id == conn.device_id:
            try:
                await sessions.finisher.finish(live, EndReason.AGENT_GONE.value, "agent", notify_agent=False)
            except Exception:
                log.exception("could not finish a support client's session",
                              extra={"client_id": conn.device_id, "session_id": live.session_id})
    try:
        await repository.end_client(server.db, conn.device_id, time.time())
    except Exception:
        log.exception("could not record that a support client left", extra={"client_id": conn.device_id})
