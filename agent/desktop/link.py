"""One accepted session helper, seen from the root service: its socket and what is outstanding.

Everything the helper sends must answer something the service asked: a prompt id it sent, an
indicator it showed, a screen stream it started, a file it handed over, a survey it showed. Replies to ids the
service no longer waits for (a late answer after a timeout) are logged and dropped; a helper
that keeps sending them, or that breaks the framing, is disconnected. Nothing a helper says
starts work in the service — except Get help: ``help.call``/``help.closed`` go to
:attr:`HelperLink.on_help` (the broker), which acts for this link's kernel-checked user only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocol.desktop import (
    DesktopConnection,
    DesktopMessage,
    FileDropped,
    HelpCall,
    HelpClosed,
    IndicatorEnded,
    IndicatorPeopleShown,
    IndicatorReady,
    PromptAnswer,
    ScreenEnded,
    ScreenFrame,
    SurveyDone,
)

from .tracker import LoginSession

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
#: Replies to nothing tolerated before the helper is disconnected.
MAX_UNSOLICITED = 100
#: Bytes of screen frames queued towards a slow tunnel before the stream is ended (the screen
#: session's own flow control keeps far fewer in flight; this only stops a misbehaving helper).
MAX_QUEUED_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """SO_PEERCRED of the helper's socket: who the kernel says connected."""

    pid: int
    uid: int
    gid: int


@dataclass
class StreamRelay:
    """A screen stream the service started on this helper: frames for the tunnel, and its end."""

    stream_id: str
    frames: asyncio.Queue[ScreenFrame | None] = field(default_factory=asyncio.Queue)
    queued_bytes: int = 0
    ended: asyncio.Future[ScreenEnded] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass
class IndicatorState:
    ready: asyncio.Future[IndicatorReady] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: People updates sent and not yet confirmed; the line the indicator last said it shows, and when it did.
    people_asked: int = 0
    people_line: str = ""
    people_shown: asyncio.Event = field(default_factory=asyncio.Event)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


class HelperLink:
    """The service's end of one helper connection, after its hello was accepted."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: DesktopConnection,
                 peer: PeerCredentials, session: LoginSession, display: str) -> None:
        self.reader, self.writer, self.conn = reader, writer, conn
        self.peer, self.session, self.display = peer, session, display
        #: The screen backend the helper said its session would use ("" unknown): for the device's capabilities.
        self.screen_backend = ""
        #: It also said sessions there are view-only (a ScreenCast-only portal).
        self.screen_view_only = False
        #: The helper's agent version from its hello ("" from helpers that predate ``screen.start.jpeg_lean``).
        self.version = ""
        self.closed = asyncio.Event()
        self.prompts: dict[str, asyncio.Future[PromptAnswer]] = {}
        self.indicators: dict[str, IndicatorState] = {}
        self.streams: dict[str, StreamRelay] = {}
        self.drops: dict[str, asyncio.Future[FileDropped]] = {}
        #: CSAT surveys shown (issue 19): survey id → the person's answer.
        self.surveys: dict[str, asyncio.Future[SurveyDone]] = {}
        self.unsolicited = 0
        #: Where Get help calls go (the broker sets it); None: they are dropped as unsolicited.
        self.on_help: Callable[[HelperLink, HelpCall | HelpClosed], None] | None = None
        self._send_lock = asyncio.Lock()
        self._handlers: dict[type[DesktopMessage], Callable[[Any], None]] = {
            PromptAnswer: self._on_answer,
            IndicatorReady: self._on_indicator_ready,
            IndicatorEnded: self._on_indicator_ended,
            IndicatorPeopleShown: self._on_people_shown,
            ScreenFrame: self._on_frame,
            ScreenEnded: self._on_screen_ended,
            FileDropped: self._on_dropped,
            HelpCall: self._on_help,
            HelpClosed: self._on_help,
            SurveyDone: self._on_survey_done,
        }

    def __repr__(self) -> str:
        return f"<helper session={self.session.session_id} user={self.session.user} pid={self.peer.pid}>"

    async def send(self, message: DesktopMessage) -> None:
        """Send to the helper; raises ConnectionError once it is gone."""
        if self.closed.is_set():
            raise ConnectionError("the session helper is gone")
        async with self._send_lock:
            self.conn.send(message)
            for chunk in self.conn.data_to_send():
                self.writer.write(chunk)
            await self.writer.drain()

    async def serve(self) -> None:
        """Read until the helper disconnects or misbehaves; then fail everything outstanding."""
        try:
            while not self.closed.is_set():
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    return
                self.conn.receive_data(data)
                for message in self.conn.events_received():
                    handler = self._handlers.get(type(message))
                    if handler is None:
                        log.warning("session helper sent %s after its hello; disconnecting", type(message).__name__,
                                    extra={"helper": repr(self)})
                        return
                    handler(message)
                if self.conn.error is not None:
                    log.warning("session helper broke the protocol; disconnecting: %s", self.conn.error.message,
                                extra={"helper": repr(self)})
                    return
                if self.unsolicited > MAX_UNSOLICITED:
                    log.warning("session helper keeps answering what was never asked; disconnecting",
                                extra={"helper": repr(self)})
                    return
        except (ConnectionError, OSError) as exc:
            log.info("session helper connection lost: %s", exc, extra={"helper": repr(self)})
        finally:
            await self.close()

    async def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        gone = ConnectionError("the session helper went away")
        replies: list[asyncio.Future[Any]] = [*self.prompts.values(), *self.drops.values(),
                                              *self.surveys.values()]
        for future in replies:
            if not future.done():
                future.set_exception(gone)
        for indicator in self.indicators.values():
            if not indicator.ready.done():
                indicator.ready.set_exception(gone)
            indicator.ended.set()  # no helper, no indicator: the session must not go on unseen
        for stream in self.streams.values():
            stream.frames.put_nowait(None)
            if not stream.ended.done():
                stream.ended.set_exception(gone)
        everything: list[asyncio.Future[Any]] = [*replies, *(i.ready for i in self.indicators.values()),
                                                 *(s.ended for s in self.streams.values())]
        for future in everything:
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: nobody may be waiting any more
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    # --- replies ------------------------------------------------------------------------------

    def _unsolicited(self, what: str) -> None:
        self.unsolicited += 1
        log.info("session helper answered nothing outstanding (%s); ignored", what, extra={"helper": repr(self)})

    def _on_answer(self, message: PromptAnswer) -> None:
        future = self.prompts.get(message.request_id)
        if future is None or future.done():
            self._unsolicited(f"prompt {message.request_id}")
            return
        future.set_result(message)

    def _on_indicator_ready(self, message: IndicatorReady) -> None:
        state = self.indicators.get(message.indicator_id)
        if state is None or state.ready.done():
            self._unsolicited(f"indicator {message.indicator_id}")
            return
        state.ready.set_result(message)

    def _on_indicator_ended(self, message: IndicatorEnded) -> None:
        state = self.indicators.get(message.indicator_id)
        if state is None:
            self._unsolicited(f"indicator {message.indicator_id}")
            return
        state.ended.set()

    def _on_people_shown(self, message: IndicatorPeopleShown) -> None:
        state = self.indicators.get(message.indicator_id)
        if state is None or state.people_asked <= 0:
            self._unsolicited(f"people of indicator {message.indicator_id}")
            return
        state.people_asked -= 1
        state.people_line = message.shown
        state.people_shown.set()

    def _on_frame(self, message: ScreenFrame) -> None:
        stream = self.streams.get(message.stream_id)
        if stream is None or stream.ended.done():
            self._unsolicited(f"frame of stream {message.stream_id}")
            return
        size = len(message.data or b"") + len(message.text or "")
        if stream.queued_bytes + size > MAX_QUEUED_BYTES:
            log.warning("session helper outran the tunnel; ending the stream", extra={"helper": repr(self)})
            stream.ended.set_result(ScreenEnded(stream_id=stream.stream_id, reason="session helper outran the tunnel"))
            stream.frames.put_nowait(None)
            return
        stream.queued_bytes += size
        stream.frames.put_nowait(message)

    def _on_screen_ended(self, message: ScreenEnded) -> None:
        stream = self.streams.get(message.stream_id)
        if stream is None or stream.ended.done():
            self._unsolicited(f"end of stream {message.stream_id}")
            return
        stream.ended.set_result(message)
        stream.frames.put_nowait(None)

    def _on_help(self, message: HelpCall | HelpClosed) -> None:
        if self.on_help is None:
            self._unsolicited("help call")
            return
        self.on_help(self, message)

    def _on_survey_done(self, message: SurveyDone) -> None:
        future = self.surveys.get(message.survey_id)
        if future is None or future.done():
            self._unsolicited(f"survey {message.survey_id}")
            return
        future.set_result(message)

    def _on_dropped(self, message: FileDropped) -> None:
        future = self.drops.get(message.drop_id)
        if future is None or future.done():
            self._unsolicited(f"file drop {message.drop_id}")
            return
        future.set_result(message)
