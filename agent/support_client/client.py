"""``helpline support CODE``: one attended session for a machine that is not enrolled.

No enrollment, no device key, no client certificate, no inventory, nothing kept after exit.
The client pins the organisation's CA (:mod:`.bundle`), redeems the code over one websocket
on the console port (``/api/v1/support/connect``), waits for the technician's offer, and from
there runs the agent's own session code (:class:`agent.sessions.AgentSessions`): the same
consent prompt, the same indicator with *End session*, the same screen pipeline, with
these differences — the policy is fixed here (a prompt always, never unattended: there is no
trust root to verify a grant, so any grant offer is refused; no shell, no tools), and the
tunnel goes to ``/api/v1/support/tunnel/{session_id}`` on the console port with the offer's
single-use token and no certificate. Within that session, a view → control request or another
technician asking to join asks the person again, as on any device. Exactly one offer is taken;
when its session is over — denied, ended by either side — or the server closes the socket, the
client exits.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent.config import AgentConfig
from agent.consent import ConsentUI
from agent.policy import LocalPolicy
from agent.sessions import TUNNEL_OPEN_TIMEOUT_S, AgentSessions
from certs import tls
from certs.pinning import fetch_pinned_ca
from common.files import safe_name
from common.proxy import websocket_proxy
from common.version import __version__
from protocol import codec
from protocol.errors import RemoteProtocolError
from protocol.messages import Error, Message
from protocol.session import TUNNEL_TOKEN_HEADER, SessionEnd, SessionJoin, SessionMode, SessionOffer, SessionPeople
from protocol.stream import MAX_PAYLOAD
from protocol.support import MAX_SUPPORT_MESSAGE_BYTES, SupportRedeem, SupportWelcome

from .bundle import Bundle

if TYPE_CHECKING:
    from agent.control_client import AgentClient

log = logging.getLogger(__name__)

CONNECT_PATH = "/api/v1/support/connect"
TUNNEL_PATH = "/api/v1/support/tunnel/"
#: What a support session may do: the person is asked every time; nothing runs without them.
SUPPORT_POLICY = LocalPolicy(require_prompt=True, allow_unattended=False, allow_shell=False, allow_root_shell=False,
                             allow_tools=False)


class SupportRefused(Exception):
    """The server refused the code (unknown, expired, used, revoked, rate-limited); the message says which."""


def pinned_context(bundle: Bundle, directory: Path) -> ssl.SSLContext:
    """Fetch the org CA, keep it only if it matches the bundle's pin, and trust nothing else (TLS 1.3)."""
    pem = fetch_pinned_ca(bundle.server, bundle.ca_sha256)  # the environment's https_proxy, if any
    path = directory / "ca.pem"
    path.write_bytes(pem)
    return tls.agent_client_context(path, None, None)


class _Link:
    """The support websocket as the session manager sees a control connection: ``send``, ``spawn``, ``config``."""

    def __init__(self, ws: ClientConnection, config: AgentConfig) -> None:
        self.ws = ws
        self.config = config
        self._tasks: set[asyncio.Future[None]] = set()

    async def send(self, message: Message) -> None:
        try:
            await self.ws.send(codec.encode(message))
        except ConnectionClosed as exc:
            raise ConnectionResetError("the support connection closed") from exc

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class SupportSessions(AgentSessions):
    """The agent's session manager with the support client's fixed policy and tunnel."""

    def __init__(self, link: _Link, bundle: Bundle, ctx: ssl.SSLContext, *, ui: ConsentUI, display: str | None,
                 group: str) -> None:
        super().__init__(cast("AgentClient", link), ui=ui, display=display, logged_in=lambda: [_user()])
        self.bundle = bundle
        self.ctx = ctx
        self._group = group

    def policy(self) -> LocalPolicy:
        return SUPPORT_POLICY

    def group(self) -> str:
        return self._group

    def tunnel_url(self, session_id: str) -> str:
        return self.bundle.wss(TUNNEL_PATH + safe_name(session_id))

    async def _open_tunnel(self, offer: SessionOffer) -> ClientConnection:
        return await connect(
            self.tunnel_url(offer.session_id), ssl=self.ctx, origin=self.bundle.origin,  # type: ignore[arg-type]
            additional_headers={TUNNEL_TOKEN_HEADER: offer.tunnel_token}, compression=None,
            proxy=websocket_proxy("", self.tunnel_url(offer.session_id)),
            max_size=MAX_PAYLOAD + 64, open_timeout=TUNNEL_OPEN_TIMEOUT_S, close_timeout=1, ping_interval=20)


@dataclass
class Outcome:
    """How the one session went (for the exit code and the last line printed)."""

    session_id: str = ""
    reason: str = ""


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "user"


async def run_support(bundle: Bundle, code: str, *, ui: ConsentUI, display: str | None,
                      say: Callable[[str], None] = print) -> Outcome:
    """Redeem ``code`` and serve the one session; SupportRefused when the server says no."""
    with tempfile.TemporaryDirectory(prefix="helpline-support-") as scratch:
        ctx = await asyncio.to_thread(pinned_context, bundle, Path(scratch))
        url = bundle.wss(CONNECT_PATH)
        try:
            ws = await connect(url, ssl=ctx, origin=bundle.origin,  # type: ignore[arg-type]
                               compression=None, proxy=websocket_proxy("", url), max_size=MAX_SUPPORT_MESSAGE_BYTES,
                               open_timeout=20, close_timeout=2, ping_interval=20)
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise SupportRefused("too many support-code attempts from here or in all; wait a minute and try again"
                                 if status == 429 else f"the server answered HTTP {status}") from exc
        async with ws:
            await ws.send(codec.encode(SupportRedeem(code=code, hostname=socket.gethostname()[:200],
                                                     user=_user()[:200], client_version=__version__)))
            welcome = _decode(await ws.recv())
            if isinstance(welcome, Error):
                raise SupportRefused(welcome.message)
            if not isinstance(welcome, SupportWelcome):
                raise SupportRefused(f"unexpected answer from the server: {type(welcome).__name__}")
            say(f"Connected to {bundle.host}. Waiting for {welcome.technician} to start the session "
                f"(up to {welcome.wait_s / 60:.0f} minutes)…")
            link = _Link(ws, AgentConfig(state_dir=Path(scratch)))
            sessions = SupportSessions(link, bundle, ctx, ui=ui, display=display, group=welcome.group)
            return await _serve(ws, link, sessions, say)


def _decode(data: str | bytes) -> Message | None:
    try:
        return codec.decode(data, max_bytes=MAX_SUPPORT_MESSAGE_BYTES)
    except RemoteProtocolError as exc:
        log.warning("unreadable message from the server: %s", exc)
        return None


async def _serve(ws: ClientConnection, link: _Link, sessions: SupportSessions,
                 say: Callable[[str], None]) -> Outcome:
    outcome = Outcome()
    try:
        while True:
            if outcome.session_id and outcome.session_id in sessions.finished:
                outcome.reason = sessions.finished[outcome.session_id]
                return outcome
            try:
                data = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            except ConnectionClosed:
                outcome.reason = outcome.reason or "the server closed the connection"
                return outcome
            message = _decode(data)
            if isinstance(message, SessionOffer):
                if outcome.session_id:  # one session per code: a second offer is refused, never shown
                    log.warning("a second session offer was refused", extra={"session_id": message.session_id})
                    continue
                if message.document_id is not None:
                    say("The server asked for an unattended session; a support client never allows one.")
                outcome.session_id = message.session_id
                say(f"{message.technician} asks to {message.mode} this screen. Answer on the screen.")
                await sessions.on_offer(cast("AgentClient", link), message)
            elif isinstance(message, SessionEnd):
                await sessions.on_end(cast("AgentClient", link), message)
            elif isinstance(message, SessionMode):  # view → control: the person is asked again
                await sessions.on_mode(cast("AgentClient", link), message)
            elif isinstance(message, SessionJoin):  # another technician: the person is asked
                await sessions.on_join(cast("AgentClient", link), message)
            elif isinstance(message, SessionPeople):
                await sessions.on_people(cast("AgentClient", link), message)
            elif isinstance(message, Error):
                log.warning("server error: %s", message.message)
    finally:
        await sessions.shutdown()
        if outcome.session_id in sessions.finished:
            outcome.reason = sessions.finished[outcome.session_id]
        await ws.close()


def default_display() -> str | None:
    return os.environ.get("DISPLAY")

