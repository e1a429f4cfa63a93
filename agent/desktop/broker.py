"""The root service's side of the desktop: a local socket where each user's session helper checks in.

Who a helper is comes from the kernel, not from what it says: the socket's SO_PEERCRED gives
the connecting process's uid and pid. Its ``hello`` claims a logind session; the broker reads
logind afresh and accepts the helper only if that session exists, is a graphical seat session,
belongs to that very uid (so user B cannot stand in for user A's desktop), is not root's, and
— where logind names one — shows the display the helper says it uses. Anything else is refused
with the reason, logged and kept in :attr:`DesktopBroker.refusals`.

The socket is world-connectable (0666 in a 0755 directory, default /run/helpline-agent) because
every user's helper must reach it; that grants nothing: a helper can only answer what the
service asks (:mod:`.link`), and the service asks only the helper of the person in front of the
device (:meth:`DesktopBroker.person_to_ask`).

What the session code gets from here: a :class:`~agent.consent.ui.ConsentUI`
(:attr:`DesktopBroker.ui`), a screen runner (:meth:`DesktopBroker.run_screen`) and
:meth:`DesktopBroker.nobody_to_ask`; plus :meth:`DesktopBroker.drop_file` for files handed to
the user and :meth:`DesktopBroker.ask_survey`, the CSAT survey's shower in service mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from common.version import __version__
from protocol.desktop import (
    DesktopConnection,
    FileDrop,
    FileDropped,
    Hello,
    HelpCall,
    HelpClosed,
    HelpReply,
    Refused,
    SurveyDone,
    SurveyShow,
    ToolkitRights,
    Welcome,
)
from protocol.surveys import SurveyAsk

from ..help import wire
from ..help.desk import Caller, HelpDesk
from ..help.endpoint import CallerSession
from ..help.survey import WINDOW_TIMEOUT_S
from ..screen.session import SessionStats
from ..screen.tunnel import Tunnel
from ..toolkit.caps import ToolkitCaps
from .link import READ_CHUNK, HelperLink, PeerCredentials, new_id
from .relay import relay_screen
from .remote_ui import RemoteConsentUI
from .tracker import LoginSession, SessionSource, TrackerUnavailable, choose

log = logging.getLogger(__name__)

DEFAULT_SOCKET = Path("/run/helpline-agent/desktop.sock")
#: A connecting helper must say hello within this long.
HELLO_TIMEOUT_S = 5.0
#: A file drop's answer (the helper writes it as the user) may take this long.
DROP_TIMEOUT_S = 30.0
#: Refusals remembered for inspection (oldest dropped).
MAX_REFUSALS = 100
#: Get help windows one helper may relay at once.
MAX_HELP_CHANNELS = 16
#: A survey shown by a helper is given up this long after the helper's own window timeout.
SURVEY_GRACE_S = 60.0


class HelperRefused(Exception):
    """A helper's hello does not hold; the message says why (and goes to the helper and the log)."""


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """The kernel's word on who is at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


def check_hello(hello: Hello, peer: PeerCredentials, sessions: list[LoginSession]) -> LoginSession:
    """The logind session a helper may serve, or :class:`HelperRefused`. Pure: the rule in one place."""
    if peer.uid == 0:
        raise HelperRefused("a session helper never runs as root")
    session = next((s for s in sessions if s.session_id == hello.session_id), None)
    if session is None:
        raise HelperRefused(f"logind has no session {hello.session_id!r}")
    if session.uid != peer.uid:
        raise HelperRefused(f"session {hello.session_id!r} belongs to uid {session.uid}, "
                            f"not to the connecting uid {peer.uid}")
    if not session.graphical:
        raise HelperRefused(f"session {hello.session_id!r} is not a graphical session on a seat")
    if session.display and hello.display and session.display != hello.display:
        raise HelperRefused(f"session {hello.session_id!r} shows display {session.display}, not {hello.display}")
    if not (hello.display or session.display or hello.wayland):
        raise HelperRefused("the helper names no display")
    return session


class DesktopBroker:
    """Accepts session helpers, knows which is in front, and lends them to the session code."""

    def __init__(self, tracker: SessionSource, socket_path: Path = DEFAULT_SOCKET) -> None:
        self.tracker = tracker
        self.socket_path = Path(socket_path)
        #: Accepted helpers by logind session id (a newer helper of the same session replaces the older).
        self.helpers: dict[str, HelperLink] = {}
        #: Remote session id → the helper that consented/shows it: its indicator, screen and upgrades stay there.
        self._bound: dict[str, HelperLink] = {}
        self.refusals: list[str] = []
        self.ui = RemoteConsentUI(self)
        self.listening = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Get help (agent/help/): set by build_agent; None answers every help call with a refusal.
        self.help: HelpDesk | None = None
        #: Open Get help windows: (helper link, its channel) → the caller session answering it.
        self._help: dict[tuple[HelperLink, str], CallerSession] = {}
        #: Called when a helper is accepted or gone (the screen backend the server knows, .backend_report).
        self.on_helpers_changed: list[Callable[[], None]] = []

    # --- the socket -----------------------------------------------------------------------

    async def serve(self, _client: Any = None) -> None:
        """Listen until cancelled (an agent background task); then disconnect every helper."""
        directory = self.socket_path.parent
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o755)  # noqa: S103 - every user's helper must reach the socket; identity is SO_PEERCRED
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        server = await asyncio.start_unix_server(self._accept, path=str(self.socket_path), limit=READ_CHUNK)
        os.chmod(self.socket_path, 0o666)  # noqa: S103 - see above
        self.listening.set()
        log.info("desktop broker listening", extra={"socket": str(self.socket_path)})
        try:
            await asyncio.Future()
        finally:
            server.close()
            for link in list(self.helpers.values()):
                await link.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            self.listening.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self._handle(reader, writer)
        finally:
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_credentials(writer.get_extra_info("socket"))
        conn = DesktopConnection("service")
        try:
            hello = await asyncio.wait_for(self._read_hello(reader, conn), HELLO_TIMEOUT_S)
            try:
                sessions = await self.tracker.sessions()
            except TrackerUnavailable as exc:
                raise HelperRefused(f"cannot check the session with logind: {exc}") from exc
            session = check_hello(hello, peer, sessions)
        except (HelperRefused, TimeoutError, OSError) as exc:  # OSError: the helper hung up before its hello
            reason = str(exc) or f"no valid hello within {HELLO_TIMEOUT_S:g} s"
            self._refuse(reason, peer)
            with contextlib.suppress(ConnectionError, OSError):
                conn.send(Refused(reason=reason[:256]))
                for chunk in conn.data_to_send():
                    writer.write(chunk)
                await writer.drain()
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            return
        link = HelperLink(reader, writer, conn, peer, session, hello.display or session.display)
        link.screen_backend, link.screen_view_only = hello.screen_backend, hello.view_only
        link.version = hello.version
        link.on_help = self._on_help
        old = self.helpers.get(session.session_id)
        self.helpers[session.session_id] = link
        if old is not None:
            log.info("a new helper replaces the old one of the same session", extra={"helper": repr(old)})
            await old.close()
        log.info("session helper accepted", extra={"session": session.session_id, "user": session.user,
                                                   "uid": peer.uid, "pid": peer.pid, "display": link.display})
        self._helpers_changed()
        try:
            await link.send(Welcome(session_id=session.session_id, user=session.user[:256]))
            await link.serve()
        finally:
            if self.helpers.get(session.session_id) is link:
                del self.helpers[session.session_id]
            for remote, bound in list(self._bound.items()):
                if bound is link:
                    del self._bound[remote]
            for key in [k for k in self._help if k[0] is link]:
                await self._help.pop(key).close()
            log.info("session helper disconnected", extra={"session": session.session_id, "pid": peer.pid})
            self._helpers_changed()

    async def _read_hello(self, reader: asyncio.StreamReader, conn: DesktopConnection) -> Hello:
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:
                raise ConnectionError("closed before its hello")
            conn.receive_data(data)
            if conn.error is not None:
                raise HelperRefused(f"invalid hello: {conn.error.message}")
            events = conn.events_received()
            if events:
                if not isinstance(events[0], Hello) or len(events) > 1:
                    raise HelperRefused("the first message must be a hello, alone")
                return events[0]

    def _helpers_changed(self) -> None:
        for hook in self.on_helpers_changed:
            try:
                hook()
            except Exception:  # a listener's bug must not break accepting helpers
                log.exception("helpers-changed hook failed")

    def _refuse(self, reason: str, peer: PeerCredentials) -> None:
        log.warning("session helper refused: %s", reason, extra={"uid": peer.uid, "pid": peer.pid})
        self.refusals.append(f"uid {peer.uid} pid {peer.pid}: {reason}")
        del self.refusals[:-MAX_REFUSALS]

    # --- Get help ---------------------------------------------------------------------------

    def _on_help(self, link: HelperLink, message: HelpCall | HelpClosed) -> None:
        """A Get help window's call, relayed by its user's helper: answered for that helper's uid only."""
        key = (link, message.channel)
        if isinstance(message, HelpClosed):
            session = self._help.pop(key, None)
            if session is not None:
                self._spawn(session.close())
            return

        async def reply(answer: wire.AgentMessage) -> None:
            await link.send(HelpReply(channel=message.channel, body=wire.encode(answer)))

        try:
            call = wire.decode_call(message.body)
        except wire.WireError as exc:
            self._spawn(reply(wire.Failed(call=0, reason=f"not a valid call: {exc}"[:4000])))
            return
        if self.help is None:
            self._spawn(reply(wire.Failed(call=call.call, reason="Get help is not available on this device")))
            return
        session = self._help.get(key)
        if session is None:
            if sum(1 for k in self._help if k[0] is link) >= MAX_HELP_CHANNELS:
                self._spawn(reply(wire.Failed(call=call.call, reason="too many help windows open")))
                return
            # The requester is the session's user as logind and SO_PEERCRED say, never the helper's word.
            session = CallerSession(self.help, Caller(uid=link.peer.uid, user=link.session.user), reply)
            self._help[key] = session
        session.receive(call)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- who is in front ------------------------------------------------------------------

    def nobody_to_ask(self) -> str:
        """The quick answer the session code needs synchronously; the prompt itself checks logind afresh."""
        if not self.helpers:
            return "no session helper is running: nobody is logged in to a graphical session"
        return ""

    async def _sessions(self) -> tuple[list[LoginSession], str]:
        try:
            return await self.tracker.sessions(), ""
        except TrackerUnavailable as exc:
            log.warning("logind unreachable: nobody can be asked", extra={"error": str(exc)})
            return [], "cannot tell who is at the device: logind does not answer"

    async def person_to_ask(self, remote_session: str = "", expect: HelperLink | None = None
                            ) -> tuple[HelperLink | None, str]:
        """The helper of the active unlocked graphical session, or why nobody can be asked.

        A session already bound to a helper (an upgrade) is asked there or not at all.
        """
        sessions, trouble = await self._sessions()
        if trouble:
            return None, trouble
        choice = choose(sessions)
        if choice.session is None:
            return None, choice.reason
        link = self.helpers.get(choice.session.session_id)
        if link is None:
            return None, f"no session helper runs in the active session ({choice.session.user})"
        wanted = expect or self._bound.get(remote_session)
        if wanted is not None and wanted is not link:
            return None, f"the session the technician was allowed into ({wanted.session.user}) is no longer in front"
        return link, ""

    async def helper_for(self, remote_session: str) -> HelperLink | None:
        """The helper a remote session is bound to; else (unattended) the active session's, locked or not."""
        bound = self._bound.get(remote_session)
        if bound is not None and not bound.closed.is_set():
            return bound
        sessions, _trouble = await self._sessions()
        active = [s for s in sessions if s.graphical and s.active]
        for session in sorted(active, key=lambda s: (s.seat != "seat0", s.seat)):
            link = self.helpers.get(session.session_id)
            if link is not None:
                return link
        return None

    def bind(self, remote_session: str, link: HelperLink) -> None:
        if remote_session:
            self._bound[remote_session] = link

    def release(self, remote_session: str) -> None:
        self._bound.pop(remote_session, None)

    # --- work done in the user's session ----------------------------------------------------

    async def run_screen(self, session_id: str, tunnel: Tunnel, /, *, mode: Literal["view", "control"],
                         display: str | None, stop: asyncio.Event, input_gate: Any, **kwargs: Any) -> SessionStats:
        """The screen runner for helper mode (:class:`agent.screen_runner.ScreenRunner`): the helper bound to
        the remote session captures and injects, as its user, on its display (``display`` and ``input_gate``
        are the service's and mean nothing there: the helper gates input with its own prompt guard)."""
        link = self._bound.get(session_id)
        if link is None or link.closed.is_set():
            return SessionStats(end_reason="no session helper to show the screen")
        monitor = kwargs.get("monitor")
        caps = kwargs.get("toolkit")
        rights = None
        if isinstance(caps, ToolkitCaps):  # the service decided; the helper only carries it out
            rights = ToolkitRights(allowed=caps.listed(), max_file_bytes=caps.max_file_bytes,  # type: ignore[arg-type]
                                   fetch_paths=list(caps.fetch_paths), unattended=caps.unattended,
                                   technician=str(kwargs.get("technician", ""))[:256],
                                   shell_idle_s=caps.shell_idle_s)
        lean = kwargs.get("lean_jpeg") is True and bool(link.version)  # a helper without a version would refuse it
        # ``screen.start.batched`` is newer than the helper's version field: only a helper of this very build reads it.
        batched = kwargs.get("batched") is True and link.version == __version__
        return await relay_screen(link, tunnel, mode=mode, stop=stop,
                                  monitor=monitor if isinstance(monitor, int) else None, toolkit=rights,
                                  session_id=session_id, lean_jpeg=lean, batched=batched)

    async def drop_file(self, name: str, data: bytes, remote_session: str = "") -> str:
        """Hand ``data`` to the user (bound helper, else the one in front) to save in their Downloads.

        Returns where it landed; raises ``PermissionError`` when nobody can take it, ``OSError``
        with the helper's reason when it could not be written.
        """
        link = self._bound.get(remote_session) if remote_session else None
        if link is None:
            link, why = await self.person_to_ask()
            if link is None:
                raise PermissionError(why)
        drop_id = new_id("drop")
        future: asyncio.Future[FileDropped] = asyncio.get_running_loop().create_future()
        link.drops[drop_id] = future
        try:
            await link.send(FileDrop(drop_id=drop_id, name=name[:255] or "file", data=data))
            async with asyncio.timeout(DROP_TIMEOUT_S):
                result = await future
        finally:
            link.drops.pop(drop_id, None)
        if not result.ok:
            raise OSError(result.detail or "the file could not be saved")
        return result.detail

    # --- the CSAT survey (issue 19) ---------------------------------------------------------

    async def survey_helper(self, requester: str) -> HelperLink | None:
        """The helper to show ``requester``'s survey: a helper of that user (their active session first);
        nobody else's desktop. An older server names no requester: then the person in front."""
        if not requester:
            link, _why = await self.person_to_ask()
            return link
        mine = [link for link in self.helpers.values() if link.session.user == requester and not link.closed.is_set()]
        if len(mine) > 1:
            sessions, _trouble = await self._sessions()
            active = {s.session_id for s in sessions if s.active}
            mine.sort(key=lambda link: link.session.session_id not in active)
        return mine[0] if mine else None

    async def ask_survey(self, ask: SurveyAsk) -> tuple[int, str] | None:
        """The survey's shower (agent.help.survey.Shower) for the root service: the window opens in the
        requester's session, drawn by their helper as them; None when nobody of theirs is logged in or the
        person did not answer."""
        link = await self.survey_helper(ask.requester)
        if link is None:
            log.info("survey not shown: no session helper of the requester",
                     extra={"request_id": ask.request_id, "requester": ask.requester})
            return None
        survey_id = new_id("survey")
        future: asyncio.Future[SurveyDone] = asyncio.get_running_loop().create_future()
        link.surveys[survey_id] = future
        try:
            await link.send(SurveyShow(survey_id=survey_id, number=ask.number, summary=ask.summary,
                                       technician=ask.technician))
            async with asyncio.timeout(WINDOW_TIMEOUT_S + SURVEY_GRACE_S):
                done = await future
        except (ConnectionError, TimeoutError) as exc:
            log.info("survey not answered: %s", exc, extra={"request_id": ask.request_id, "helper": repr(link)})
            return None
        finally:
            link.surveys.pop(survey_id, None)
        if done.score is None:
            return None
        return done.score, done.comment
