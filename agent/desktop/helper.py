"""The session helper: ``helpline agent session-helper``, one per graphical session, run as its user.

Started by the user's systemd unit or XDG autostart, it connects to the root service's socket,
says which logind session it runs in (``$XDG_SESSION_ID``) and which display it sees, and then
only does what the service asks, with the user's rights and on the user's display: show the
consent prompt and the indicator (the real Tk windows, :mod:`agent.consent.tk`), run the screen
session (:func:`agent.screen.session.run_screen_session`, capture and input) over frames the
service relays from its mTLS tunnel, save files handed to the user into their Downloads, and show
the CSAT survey of the user's resolved request (:mod:`agent.help.survey_window`).
It holds no key and opens no network connection.

A refused helper exits (status 2) with the service's reason; a helper whose service went away
(restart, update) reconnects with a capped backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal

from common.version import __version__
from protocol.desktop import (
    DesktopConnection,
    DesktopMessage,
    FileDrop,
    FileDropped,
    Hello,
    HelpReply,
    IndicatorClose,
    IndicatorEnded,
    IndicatorMode,
    IndicatorPeople,
    IndicatorPeopleShown,
    IndicatorReady,
    IndicatorShow,
    PromptAnswer,
    PromptShow,
    Refused,
    ScreenEnded,
    ScreenFrame,
    ScreenStart,
    ScreenStop,
    SurveyDone,
    SurveyShow,
    Welcome,
)
from protocol.surveys import SurveyAsk

from ..consent.ui import ConsentUI, ConsentUnavailable, Indicator, IndicatorInfo, PromptRequest
from ..help.helper_socket import HelpRelay
from ..help.helper_socket import default_path as default_help_path
from ..help.survey import Shower, tk_shower
from . import downloads
from .link import READ_CHUNK

SCREEN_BACKENDS = ("x11", "wayland-mutter", "wayland-portal")


async def _screen_backend() -> tuple[Literal["", "x11", "wayland-mutter", "wayland-portal"], bool]:
    """The backend this session's screen would use (agent.screen.wayland.backend), "" when it cannot be told, and
    whether a session there is view-only — the same check as direct mode's hello (``screen_capabilities``)."""
    from protocol.screen_backend import VIEW_ONLY, capability

    from ..screen.wayland.backend import describe_backend, screen_capabilities

    try:
        name = await describe_backend()
        view_only = VIEW_ONLY in await screen_capabilities(capability(name))
    except Exception as exc:  # the capability is informative: never let it stop the helper
        log.warning("screen backend unknown: %s", exc)
        return "", False
    return (name, view_only) if name in SCREEN_BACKENDS else ("", False)  # type: ignore[return-value]

log = logging.getLogger(__name__)

EXIT_REFUSED = 2
#: Viewer messages queued towards the local screen session before the stream is dropped.
MAX_QUEUED_FRAMES = 4096
RECONNECT_CAP_S = 10.0
#: How long the indicator window has to confirm a new people line before the helper answers with what it has.
PEOPLE_CONFIRM_S = 10.0


class ConnectionClosedByService(ConnectionError):
    """The service ended this stream or went away (the screen session reads it as "tunnel closed")."""


class _StreamTunnel:
    """The tunnel as the helper's screen session sees it: frames to and from the service."""

    def __init__(self, helper: SessionHelper, stream_id: str) -> None:
        self.helper, self.stream_id = helper, stream_id
        self.incoming: asyncio.Queue[str | bytes | None] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self.stop = asyncio.Event()

    async def send(self, data: str | bytes, /) -> None:
        if isinstance(data, str):
            await self.helper.send(ScreenFrame(stream_id=self.stream_id, text=data))
        else:
            await self.helper.send(ScreenFrame(stream_id=self.stream_id, data=bytes(data)))

    async def recv(self) -> str | bytes:
        item = await self.incoming.get()
        if item is None:
            raise ConnectionClosedByService("the service closed the stream")
        return item

    def close(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.incoming.put_nowait(None)
        self.stop.set()


class SessionHelper:
    """One connection to the service at a time; ``ui`` None = the real Tk prompt on ``display``."""

    def __init__(self, socket_path: Path, session_id: str, display: str, *, wayland: str = "",
                 ui: ConsentUI | None = None, downloads_dir: Path | None = None,
                 screen_kwargs: dict[str, Any] | None = None, help_socket: Path | None = None,
                 survey_shower: Shower | None = None) -> None:
        from ..consent.select import consent_ui

        self.socket_path, self.session_id, self.display, self.wayland = socket_path, session_id, display, wayland
        # Tk on X; under Wayland Tk through XWayland, or native zenity windows without X (agent.consent.select).
        self.ui: ConsentUI = ui if ui is not None else consent_ui(display or None, wayland)
        self.downloads_dir = downloads_dir if downloads_dir is not None else downloads.downloads_dir()
        self.screen_kwargs = screen_kwargs or {}
        #: The CSAT survey window (issue 19) on this session's display, as this user.
        self.survey_shower = survey_shower if survey_shower is not None else tk_shower(display or None)
        self.refusal = ""
        self.welcomed = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._conn = DesktopConnection("helper")
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._indicators: dict[str, Indicator] = {}
        #: Remote session → its indicator (with the chat window the session's toolkit talks through).
        self._session_indicators: dict[str, Indicator] = {}
        self._streams: dict[str, _StreamTunnel] = {}
        self._handlers: dict[type[DesktopMessage], Callable[[Any], None]] = {
            PromptShow: lambda m: self._spawn(self._prompt(m)),
            IndicatorShow: lambda m: self._spawn(self._indicator(m)),
            IndicatorMode: lambda m: self._spawn(self._indicator_mode(m)),
            IndicatorPeople: lambda m: self._spawn(self._indicator_people(m)),
            IndicatorClose: lambda m: self._spawn(self._indicator_close(m)),
            ScreenStart: lambda m: self._spawn(self._screen(m)),
            ScreenFrame: self._frame,
            ScreenStop: self._screen_stop,
            FileDrop: lambda m: self._spawn(self._drop(m)),
            HelpReply: self._help_reply,
            SurveyShow: lambda m: self._spawn(self._survey(m)),
        }
        #: Get help windows of this user (``helpline help``) relayed to the service (agent/help/).
        help_path = help_socket if help_socket is not None else default_help_path()
        self.help = HelpRelay(help_path, self.send, self.welcomed) if help_path is not None else None

    # --- connection ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> int:
        """Serve the service until ``stop`` (0), or until it refuses this helper (:data:`EXIT_REFUSED`)."""
        stop = stop or asyncio.Event()
        relay = asyncio.ensure_future(self.help.serve()) if self.help is not None else None
        try:
            return await self._run(stop)
        finally:
            if relay is not None:
                relay.cancel()
                await asyncio.gather(relay, return_exceptions=True)

    async def _run(self, stop: asyncio.Event) -> int:
        attempt = 0
        while not stop.is_set():
            try:
                outcome = await self._connect_and_serve(stop)
            except (ConnectionError, OSError) as exc:
                log.info("agent service not reachable at %s: %s", self.socket_path, exc)
                outcome = "lost"
            if outcome == "refused":
                return EXIT_REFUSED
            if outcome == "welcomed":
                attempt = 0
            attempt += 1
            delay = random.uniform(0, min(RECONNECT_CAP_S, 0.25 * 2 ** attempt))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        return 0

    async def _connect_and_serve(self, stop: asyncio.Event) -> str:
        reader, writer = await asyncio.open_unix_connection(str(self.socket_path), limit=READ_CHUNK)
        self._writer, self._conn = writer, DesktopConnection("helper")
        welcomed = False
        stopping = asyncio.ensure_future(stop.wait())
        try:
            backend, view_only = await _screen_backend()
            await self.send(Hello(session_id=self.session_id, display=self.display, wayland=self.wayland,
                                  screen_backend=backend, view_only=view_only, version=__version__))
            while True:
                reading = asyncio.ensure_future(reader.read(READ_CHUNK))
                await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    reading.cancel()
                    return "welcomed" if welcomed else "lost"
                data = reading.result()
                if not data:
                    return "welcomed" if welcomed else "lost"
                self._conn.receive_data(data)
                for message in self._conn.events_received():
                    if isinstance(message, Refused):
                        self.refusal = message.reason
                        log.error("the agent service refused this session helper: %s", message.reason)
                        return "refused"
                    if isinstance(message, Welcome):
                        welcomed = True
                        self.welcomed.set()
                        log.info("session helper connected", extra={"session": message.session_id,
                                                                     "user": message.user})
                        continue
                    if not welcomed:
                        log.warning("the service asked for work before welcoming this helper; disconnecting")
                        return "lost"
                    handler = self._handlers.get(type(message))
                    if handler is not None:
                        handler(message)
                if self._conn.error is not None:
                    log.warning("the service broke the protocol: %s", self._conn.error.message)
                    return "lost"
        finally:
            stopping.cancel()
            self.welcomed.clear()
            await self._teardown()
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def send(self, message: DesktopMessage) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise ConnectionClosedByService("not connected to the agent service")
        async with self._send_lock:
            self._conn.send(message)
            for chunk in self._conn.data_to_send():
                writer.write(chunk)
            await writer.drain()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session helper task failed", exc_info=task.exception())

    async def _teardown(self) -> None:
        """The service is gone: stop every stream, close every indicator, finish or cancel the rest."""
        if self.help is not None:
            self.help.drop_all()
        for tunnel in self._streams.values():
            tunnel.close()
        for indicator in list(self._indicators.values()):
            with contextlib.suppress(Exception):
                await indicator.close()
        self._indicators.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _reply(self, message: DesktopMessage) -> None:
        with contextlib.suppress(ConnectionError):
            await self.send(message)

    # --- what the service asks ------------------------------------------------------------------

    async def _prompt(self, message: PromptShow) -> None:
        answer = await self.ui.prompt(PromptRequest(
            technician=message.technician, mode=message.mode, reason=message.reason, timeout_s=message.timeout_s,
            note=message.note, upgrade=message.upgrade, capabilities=tuple(message.capabilities),
            colleagues_option=message.colleagues_option, join=message.join))
        log.info("consent prompt answered", extra={"allowed": answer.allowed, "by": answer.by, "uid": os.getuid(),
                                                    "join": message.join, "colleagues": answer.colleagues})
        await self._reply(PromptAnswer(request_id=message.request_id, allowed=answer.allowed, by=answer.by,
                                       reason=answer.reason[:256],
                                       colleagues=answer.allowed and answer.colleagues and message.colleagues_option))

    async def _indicator(self, message: IndicatorShow) -> None:
        try:
            indicator = await self.ui.indicator(IndicatorInfo(technician=message.technician, mode=message.mode,
                                                              unattended=message.unattended,
                                                              capabilities=tuple(message.capabilities),
                                                              session_id=message.session_id,
                                                              viewers=tuple(message.viewers),
                                                              controller=message.controller))
        except ConsentUnavailable as exc:
            await self._reply(IndicatorReady(indicator_id=message.indicator_id, ok=False, message=str(exc)[:256]))
            return
        self._indicators[message.indicator_id] = indicator
        if message.session_id:
            self._session_indicators[message.session_id] = indicator
        await self._reply(IndicatorReady(indicator_id=message.indicator_id, ok=True))
        try:
            await indicator.ended.wait()
        finally:
            if self._session_indicators.get(message.session_id) is indicator:
                del self._session_indicators[message.session_id]
        if self._indicators.get(message.indicator_id) is indicator:
            await self._reply(IndicatorEnded(indicator_id=message.indicator_id))

    async def _indicator_mode(self, message: IndicatorMode) -> None:
        indicator = self._indicators.get(message.indicator_id)
        if indicator is not None:
            await indicator.set_mode(message.mode)

    async def _indicator_people(self, message: IndicatorPeople) -> None:
        """Join, leave, hand-off: the indicator lists everyone watching; the service learns the line it shows."""
        indicator = self._indicators.get(message.indicator_id)
        set_people = getattr(indicator, "set_people", None)
        if indicator is None or set_people is None:
            return
        await set_people(tuple(message.viewers), message.controller)
        shown = getattr(indicator, "people_shown", None)
        if isinstance(shown, asyncio.Event):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shown.wait(), PEOPLE_CONFIRM_S)
        line = str(getattr(indicator, "people_line", ""))[:1000]
        await self._reply(IndicatorPeopleShown(indicator_id=message.indicator_id, shown=line))

    async def _indicator_close(self, message: IndicatorClose) -> None:
        indicator = self._indicators.pop(message.indicator_id, None)
        if indicator is not None:
            await indicator.close()
            indicator.ended.set()  # lets _indicator return (popped first: no "ended" goes back)

    async def _screen(self, message: ScreenStart) -> None:
        from ..screen.session import run_screen_session
        from ..shell.tunnel import session_shell
        from ..toolkit.caps import ToolkitCaps
        from ..toolkit.tunnel import seen_by_device, toolkit_tunnel

        tunnel = _StreamTunnel(self, message.stream_id)
        self._streams[message.stream_id] = tunnel
        rights = message.toolkit
        caps = None if rights is None else ToolkitCaps(
            frozenset(rights.allowed), rights.max_file_bytes, fetch_paths=tuple(rights.fetch_paths),
            unattended=rights.unattended, shell_idle_s=rights.shell_idle_s)
        try:
            # The toolkit runs here, as the user: files land in (and come from) what the user can reach.
            indicator = self._session_indicators.get(message.session_id) if message.session_id else None
            caps, device = seen_by_device(caps, indicator)  # no chat window to show it: no toolkit
            async with toolkit_tunnel(tunnel, caps, technician=rights.technician if rights else "",
                                      folder=self.downloads_dir, device=device,  # type: ignore[arg-type]
                                      gate=self.ui.prompts) as wrapped, \
                    session_shell(wrapped, caps, note=getattr(device, "note", None)) as shelled:
                # The shell runs here too, as this helper's user (never root: root shells are direct mode only).
                stats = await run_screen_session(shelled, mode=message.mode, display=self.display or None,
                                                 stop=tunnel.stop, input_gate=self.ui.prompts,
                                                 monitor=message.monitor, lean_jpeg=message.jpeg_lean is True,
                                                 batched=message.batched is True,
                                                 **self.screen_kwargs)
        except Exception as exc:
            log.exception("screen session failed in the helper")
            await self._reply(ScreenEnded(stream_id=message.stream_id, reason=f"screen failed: {type(exc).__name__}"))
            return
        finally:
            self._streams.pop(message.stream_id, None)
        await self._reply(ScreenEnded(stream_id=message.stream_id, reason=stats.end_reason[:256],
                                      refused_inputs=stats.refused_inputs, injected_inputs=stats.injected_inputs,
                                      updates_sent=stats.updates_sent))

    async def _survey(self, message: SurveyShow) -> None:
        ask = SurveyAsk(request_id=message.survey_id, number=message.number, summary=message.summary,
                        technician=message.technician)
        answer = await self.survey_shower(ask)
        log.info("survey shown", extra={"survey": message.survey_id, "answered": answer is not None})
        score, comment = answer if answer is not None else (None, "")
        await self._reply(SurveyDone(survey_id=message.survey_id, score=score, comment=comment))

    def _help_reply(self, message: HelpReply) -> None:
        if self.help is not None:
            self._spawn(self.help.reply(message))

    def _frame(self, message: ScreenFrame) -> None:
        tunnel = self._streams.get(message.stream_id)
        if tunnel is None:
            return
        try:
            tunnel.incoming.put_nowait(message.text if message.text is not None else (message.data or b""))
        except asyncio.QueueFull:
            log.warning("viewer messages pile up faster than the screen session takes them; ending the stream")
            tunnel.stop.set()

    def _screen_stop(self, message: ScreenStop) -> None:
        tunnel = self._streams.get(message.stream_id)
        if tunnel is not None:
            tunnel.stop.set()

    async def _drop(self, message: FileDrop) -> None:
        try:
            path = await asyncio.to_thread(downloads.save, self.downloads_dir, message.name, message.data)
        except OSError as exc:
            detail = f"{type(exc).__name__}: {exc}"[:4096]
            await self._reply(FileDropped(drop_id=message.drop_id, ok=False, detail=detail))
            return
        log.info("file saved for the user", extra={"path": str(path), "bytes": len(message.data)})
        await self._reply(FileDropped(drop_id=message.drop_id, ok=True, detail=str(path)[:4096]))
