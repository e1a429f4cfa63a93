"""The agent's end of a session tunnel: ``wss://…:8443/agent/tunnel/{session_id}``.

Mutual TLS (the device certificate, checked against the registry like the control
channel) plus the single-use tunnel token in the ``X-Helpline-Tunnel-Token`` header,
which must belong to this session, to this device *and* to the certificate the offer was
sent to. Websocket compression is off: screen data is already compressed, and
compression over secrets invites length side channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from certs.pki import certificate_serial_hex
from protocol.session import TUNNEL_TOKEN_HEADER

from ..agent_channel import SERVER_KEY, authenticate_device
from ..http_util import json_error
from .manager import SESSIONS, SessionRefused

if TYPE_CHECKING:
    from ..app import HelplineServer


async def agent_tunnel(request: web.Request) -> web.StreamResponse:
    server: HelplineServer = request.app[SERVER_KEY]
    manager = server.console_app[SESSIONS]
    device_id, _row, cert = await authenticate_device(server, request)
    token = request.headers.get(TUNNEL_TOKEN_HEADER, "")
    try:
        session = await manager.claim_tunnel(request.match_info["session_id"], token, device_id,
                                             certificate_serial_hex(cert))
    except SessionRefused as exc:
        return json_error(exc.status, exc.code, exc.message)
    ws = web.WebSocketResponse(compress=False, max_msg_size=manager.settings.max_message_bytes, autoping=True)
    await ws.prepare(request)
    relay = manager.relay_for(session)
    await manager.started(session)
    await relay.serve("agent", ws)
    return ws


def setup(server: HelplineServer) -> None:
    server.agent_app.router.add_get("/agent/tunnel/{session_id}", agent_tunnel)
