"""The local socket between the root agent service and a user's session helper, sans-I/O.

Framing: each message is a 4-byte big-endian length, then a msgpack map (msgspec, tagged by
``t``). Length is checked before anything is buffered beyond it, so a peer cannot make either
side allocate more than :data:`MAX_FRAME_BYTES`.

Direction is part of the type system: :class:`DesktopConnection` for the service decodes only
:data:`HelperMessage` types, the helper's only :data:`ServiceMessage` types — a helper cannot
even express "run this as root". What the helper may send is replies to what the service asked
(prompt answers, indicator events, frames of a screen stream the service started, results of a
file drop) plus one ``hello`` naming its logind session; the service checks every reply against
what it has outstanding. The one exception is Get help (issue 18): :class:`HelpCall` carries its
user's own support requests and self-service fix runs, acted on for the kernel-checked uid only.
The CSAT survey (issue 19) is service-initiated like a prompt: :class:`SurveyShow` out,
:class:`SurveyDone` back for that id only.

Shape follows :mod:`protocol.control`: verbs in (:meth:`DesktopConnection.receive_data`,
:meth:`DesktopConnection.send`), nouns out (:meth:`DesktopConnection.events_received`,
:meth:`DesktopConnection.data_to_send`); peer garbage is recorded (:attr:`DesktopConnection.error`),
never raised past :meth:`receive_data`, and the caller closes.
"""

from __future__ import annotations

import struct
from typing import Annotated, Literal

import msgspec

from . import limits
from .errors import InvalidMessage, LocalProtocolError, MalformedMessage, MessageTooLarge, RemoteProtocolError
from .screen_backend import ScreenBackendName
from .session import MAX_PEOPLE
from .stream import MAX_MONITORS, MAX_PAYLOAD, MAX_TEXT_BYTES
from .surveys import MAX_COMMENT as MAX_SURVEY_COMMENT
from .surveys import MAX_SUMMARY as MAX_SURVEY_SUMMARY

#: Largest file the service hands a helper to drop into the user's Downloads.
MAX_FILE_DROP = 4 * 1024 * 1024
#: Largest line of the local help protocol relayed (a request with its screenshot; agent.help.wire.MAX_LINE).
MAX_HELP_BODY = 4 * 1024 * 1024
#: Largest frame either side accepts: a screen update (the tunnel's own limit) plus envelope.
MAX_FRAME_BYTES = max(MAX_PAYLOAD, MAX_FILE_DROP, MAX_HELP_BODY) + 64 * 1024
#: The longest wait a prompt may ask for (the policy's timeouts are far below).
MAX_PROMPT_TIMEOUT_S = 3600.0
LENGTH = struct.Struct(">I")

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_ID_LEN,
                                 pattern=r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]*$")]
Short = Annotated[str, msgspec.Meta(max_length=limits.MAX_SHORT_STR)]
#: An X display (":0", ":1.0", "host:10") or a Wayland socket name ("wayland-0"); no paths, no spaces.
DisplayName = Annotated[str, msgspec.Meta(max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$")]
Mode = Literal["view", "control"]
#: The technicians in one session (protocol.session.MAX_PEOPLE of them at most), as the indicator lists them.
People = Annotated[list[Short], msgspec.Meta(max_length=MAX_PEOPLE)]
FileName = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class DesktopMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="t"):
    """Base of every message on the local socket."""


# --- helper → service ----------------------------------------------------------------------


class Hello(DesktopMessage, frozen=True, tag="hello"):
    """First message of a helper: the logind session it says it runs in, and its display."""

    session_id: Id
    display: DisplayName = ""
    wayland: DisplayName = ""
    version: Short = ""
    #: The screen backend a session here would use (protocol.screen_backend), for the device's capabilities.
    screen_backend: ScreenBackendName = ""
    #: Sessions here would be view-only (the portal offers no RemoteDesktop: protocol.screen_backend.VIEW_ONLY).
    view_only: bool = False


class PromptAnswer(DesktopMessage, frozen=True, tag="prompt.answer"):
    request_id: Id
    allowed: bool
    by: Literal["user", "timeout", "unavailable"]
    reason: Short = ""
    #: The user ticked "my helpdesk may bring colleagues" (only meaningful where the prompt offered it).
    colleagues: bool = False


class IndicatorReady(DesktopMessage, frozen=True, tag="indicator.ready"):
    """The indicator is on screen (``ok``), or why it could not be shown."""

    indicator_id: Id
    ok: bool
    message: Short = ""


class IndicatorEnded(DesktopMessage, frozen=True, tag="indicator.ended"):
    """The user pressed *End session* (or the indicator vanished)."""

    indicator_id: Id


class IndicatorPeopleShown(DesktopMessage, frozen=True, tag="indicator.people_shown"):
    """The indicator now lists the people :class:`IndicatorPeople` named: the line it shows."""

    indicator_id: Id
    shown: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class ScreenFrame(DesktopMessage, frozen=True, tag="screen.frame"):
    """One tunnel message of a screen stream, relayed as is (both ways): text or binary."""

    stream_id: Id
    text: Annotated[str, msgspec.Meta(max_length=MAX_TEXT_BYTES)] | None = None
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_PAYLOAD)] | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.data is None):
            raise ValueError("a frame carries text or data, exactly one")


class ScreenEnded(DesktopMessage, frozen=True, tag="screen.ended"):
    """The helper's screen session for ``stream_id`` is over."""

    stream_id: Id
    reason: Short = ""
    refused_inputs: Count = 0
    injected_inputs: Count = 0
    updates_sent: Count = 0


class FileDropped(DesktopMessage, frozen=True, tag="file.dropped"):
    drop_id: Id
    ok: bool
    #: Where it landed (ok) or why not.
    detail: Annotated[str, msgspec.Meta(max_length=4096)] = ""


class HelpCall(DesktopMessage, frozen=True, tag="help.call"):
    """A line of the local help protocol (agent.help.wire) from a Get help window of this helper's user.

    ``channel`` names the window's connection to the helper. The one kind of message by which a helper
    asks the service for something: the service decodes ``body`` as a typed call and acts for the
    helper's *kernel-checked* user only (their own requests; fixes within the signed budget).
    """

    channel: Id
    body: Annotated[bytes, msgspec.Meta(max_length=MAX_HELP_BODY)]


class HelpClosed(DesktopMessage, frozen=True, tag="help.closed"):
    """The window behind ``channel`` went away (the service forgets its watchers)."""

    channel: Id


class SurveyDone(DesktopMessage, frozen=True, tag="survey.done"):
    """How the person answered :class:`SurveyShow` ``survey_id``; ``score`` None: not answered (Not now,
    the window closed or timed out, no display) — the service then sends nothing to the server."""

    survey_id: Id
    score: Annotated[int, msgspec.Meta(ge=1, le=5)] | None = None
    comment: Annotated[str, msgspec.Meta(max_length=MAX_SURVEY_COMMENT)] = ""


# --- service → helper ----------------------------------------------------------------------


class Welcome(DesktopMessage, frozen=True, tag="welcome"):
    session_id: Id
    user: Short = ""


class Refused(DesktopMessage, frozen=True, tag="refused"):
    """The service will not work with this helper; it closes right after."""

    reason: Short


#: A toolkit capability shown in the prompt and on the indicator.
Capability = Literal["chat", "files", "clipboard", "shell"]


class PromptShow(DesktopMessage, frozen=True, tag="prompt"):
    request_id: Id
    technician: Short
    mode: Mode
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_PROMPT_TIMEOUT_S)]
    reason: Short = ""
    note: Short = ""
    upgrade: bool = False
    #: The toolkit capabilities the session would get (protocol.toolkit.CAPABILITIES), listed in the prompt.
    capabilities: Annotated[list[Capability], msgspec.Meta(max_length=4)] = []
    #: Offer the "my helpdesk may bring colleagues" checkbox (the first prompt of an attended session).
    colleagues_option: bool = False
    #: ``technician`` asks to join a running session (view only): the prompt names them as the joiner.
    join: bool = False


class IndicatorShow(DesktopMessage, frozen=True, tag="indicator.show"):
    indicator_id: Id
    technician: Short
    mode: Mode
    unattended: bool = False
    capabilities: Annotated[list[Capability], msgspec.Meta(max_length=4)] = []
    #: The remote session it shows: the helper's toolkit for that session uses this indicator's chat window.
    session_id: Short = ""
    #: Everyone watching (join and hand-off) and who controls; empty: just ``technician``.
    viewers: People = []
    controller: Short | None = None


class IndicatorMode(DesktopMessage, frozen=True, tag="indicator.mode"):
    indicator_id: Id
    mode: Mode


class IndicatorPeople(DesktopMessage, frozen=True, tag="indicator.people"):
    """Everyone watching now and who controls (join, leave, hand-off); answered by :class:`IndicatorPeopleShown`."""

    indicator_id: Id
    viewers: People = []
    controller: Short | None = None


class IndicatorClose(DesktopMessage, frozen=True, tag="indicator.close"):
    indicator_id: Id


class ToolkitRights(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the service decided a session's toolkit may do (agent.toolkit.caps); the helper does no more."""

    allowed: Annotated[list[Capability], msgspec.Meta(max_length=4)] = []
    max_file_bytes: Annotated[int, msgspec.Meta(ge=0, le=2**40)] = 0
    fetch_paths: Annotated[list[Annotated[str, msgspec.Meta(max_length=256)]], msgspec.Meta(max_length=32)] = []
    unattended: bool = False
    technician: Short = ""
    #: The device policy's shell idle timeout (the helper runs the shell and hangs it up).
    shell_idle_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 900.0


class ScreenStart(DesktopMessage, frozen=True, tag="screen.start"):
    stream_id: Id
    mode: Mode
    monitor: Annotated[int, msgspec.Meta(ge=0, le=MAX_MONITORS - 1)] | None = None
    #: The in-session toolkit's rights (None: no toolkit, its messages are refused as unknown).
    toolkit: ToolkitRights | None = None
    #: The remote session streamed (its indicator is the toolkit's device side).
    session_id: Short = ""
    #: Send JPEGs without their standard tables (``session.offer.jpeg_lean``). Only sent to helpers
    #: whose hello names a version (older ones refuse unknown fields); left out of the message otherwise.
    jpeg_lean: bool | msgspec.UnsetType = msgspec.UNSET
    #: Send each update's records in batched messages (``session.offer.batched``). Only sent to helpers of
    #: the service's own version (older ones refuse unknown fields); left out of the message otherwise.
    batched: bool | msgspec.UnsetType = msgspec.UNSET


class ScreenStop(DesktopMessage, frozen=True, tag="screen.stop"):
    stream_id: Id


class HelpReply(DesktopMessage, frozen=True, tag="help.reply"):
    """An answer (or a pushed update) of the local help protocol for the window behind ``channel``."""

    channel: Id
    body: Annotated[bytes, msgspec.Meta(max_length=MAX_HELP_BODY)]


class SurveyShow(DesktopMessage, frozen=True, tag="survey.show"):
    """Show the CSAT survey of a resolved request (issue 19) on this helper's display, as its user."""

    survey_id: Id
    number: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
    summary: Annotated[str, msgspec.Meta(max_length=MAX_SURVEY_SUMMARY)] = ""
    technician: Short = ""


class FileDrop(DesktopMessage, frozen=True, tag="file.drop"):
    """Write ``data`` into the user's Downloads folder as the user, under a safe form of ``name``."""

    drop_id: Id
    name: FileName
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_FILE_DROP)]


HelperMessage = (Hello | PromptAnswer | IndicatorReady | IndicatorEnded | IndicatorPeopleShown | ScreenFrame
                 | ScreenEnded | FileDropped | HelpCall | HelpClosed | SurveyDone)
ServiceMessage = (Welcome | Refused | PromptShow | IndicatorShow | IndicatorMode | IndicatorPeople | IndicatorClose
                  | ScreenStart | ScreenFrame | ScreenStop | FileDrop | HelpReply | SurveyShow)
Role = Literal["service", "helper"]

_encoder = msgspec.msgpack.Encoder()
#: What each side may receive: the service decodes helper messages, the helper service messages.
_decoders: dict[Role, msgspec.msgpack.Decoder[DesktopMessage]] = {
    "service": msgspec.msgpack.Decoder(HelperMessage),  # type: ignore[arg-type]
    "helper": msgspec.msgpack.Decoder(ServiceMessage),  # type: ignore[arg-type]
}
_sendable: dict[Role, tuple[type[DesktopMessage], ...]] = {
    "service": (Welcome, Refused, PromptShow, IndicatorShow, IndicatorMode, IndicatorPeople, IndicatorClose,
                ScreenStart, ScreenFrame, ScreenStop, FileDrop, HelpReply, SurveyShow),
    "helper": (Hello, PromptAnswer, IndicatorReady, IndicatorEnded, IndicatorPeopleShown, ScreenFrame, ScreenEnded,
               FileDropped, HelpCall, HelpClosed, SurveyDone),
}


def encode_frame(message: DesktopMessage) -> bytes:
    """Length prefix plus msgpack body."""
    body = _encoder.encode(message)
    if len(body) > MAX_FRAME_BYTES:
        raise LocalProtocolError(f"{type(message).__name__} of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return LENGTH.pack(len(body)) + body


def decode_body(role: Role, body: bytes) -> DesktopMessage:
    """Validate one frame body received by ``role``; raises only :class:`RemoteProtocolError`."""
    try:
        return _decoders[role].decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidMessage(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise MalformedMessage(str(exc)) from exc
    except ValueError as exc:  # __post_init__
        raise InvalidMessage(str(exc)) from exc


class DesktopConnection:
    """One end of the local socket: bytes in, typed messages out (and the reverse)."""

    def __init__(self, role: Role, max_frame: int = MAX_FRAME_BYTES) -> None:
        self.role = role
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._events: list[DesktopMessage] = []
        self._outgoing: list[bytes] = []
        #: The first protocol violation of the peer; once set, nothing more is decoded.
        self.error: RemoteProtocolError | None = None

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the socket; complete frames become events (or set :attr:`error`)."""
        if self.error is not None:
            return
        self._buffer += data
        while len(self._buffer) >= LENGTH.size:
            (size,) = LENGTH.unpack_from(self._buffer)
            if size > self.max_frame:
                self._fail(MessageTooLarge(f"frame of {size} bytes exceeds {self.max_frame}"))
                return
            if len(self._buffer) < LENGTH.size + size:
                return
            body = bytes(self._buffer[LENGTH.size:LENGTH.size + size])
            del self._buffer[:LENGTH.size + size]
            try:
                self._events.append(decode_body(self.role, body))
            except RemoteProtocolError as exc:
                self._fail(exc)
                return

    def _fail(self, exc: RemoteProtocolError) -> None:
        self.error = exc
        self._buffer.clear()

    def events_received(self) -> list[DesktopMessage]:
        events, self._events = self._events, []
        return events

    def send(self, message: DesktopMessage) -> None:
        if not isinstance(message, _sendable[self.role]):
            raise LocalProtocolError(f"the {self.role} does not send {type(message).__name__}")
        self._outgoing.append(encode_frame(message))

    def data_to_send(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out
