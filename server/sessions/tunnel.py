"""The agent's end of a session tunnel: ``wss://…:8443/agent/tunnel/{session_id}``.

Mutual TLS (the device certificate, checked against the registry like the control
channel) plus the single-use tunnel token in the ``X-Helpline-Tunnel-Token`` header,
which must belong to this session, to this device *and* to the certificate the offer was
sent to (:mod:`.tokens`). Websocket compression is off: screen data is already compressed,
and compression over secrets invites length side channels.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from cryptography import x509

from certs.pki import certificate_serial_hex
from protocol.session import TUNNEL_TOKEN_HEADER
from server import api
from server.store import Row

from .driver import SessionDriver

#: The device behind a request's client certificate: (device id, registry row, certificate);
#: raises 401/403 when there is none or it is not allowed in.
DeviceAuthenticator = Callable[[web.Request], Awaitable[tuple[str, Row, x509.Certificate]]]


def routes(sessions: SessionDriver, authenticate: DeviceAuthenticator) -> list[api.Route]:
    async def agent_tunnel(request: web.Request) -> web.StreamResponse:
        """The agent's session tunnel (websocket, mTLS + tunnel token)."""
        device_id, _row, cert = await authenticate(request)
        session = await sessions.claim_tunnel(request.match_info["session_id"],
                                              request.headers.get(TUNNEL_TOKEN_HEADER, ""), device_id,
                                              certificate_serial_hex(cert))
        ws = web.WebSocketResponse(compress=False, max_msg_size=sessions.settings.max_message_bytes, autoping=True)
        await ws.prepare(request)
        relay = sessions.relay_for(session)
        await sessions.started(session)
        await relay.serve("agent", ws)
        return ws

    return [api.Route("GET", "/agent/tunnel/{session_id}", agent_tunnel, api.DEVICE_CERT, websocket=True,
                      summary="Session tunnel (websocket, mTLS + single-use tunnel token)",
                      errors={403: "Certificate or tunnel token refused"})]
