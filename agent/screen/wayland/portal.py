"""The xdg-desktop-portal RemoteDesktop + ScreenCast portals: the cross-desktop Wayland path.

KDE Plasma, wlroots desktops and GNOME all implement ``org.freedesktop.portal.RemoteDesktop``
and ``org.freedesktop.portal.ScreenCast`` on the user's session bus. Unlike Mutter's own API
the portal asks the person: ``Start`` shows the desktop's chooser (which monitor, whether to
allow remote interaction), so it is a second question after Helpline's own consent prompt —
the screen session calls :meth:`PortalSession.open` only after that prompt was answered, and
the portal's Cancel ends the session with :class:`PortalCancelled`, whose message the
technician sees.

The calls, in order: ``CreateSession``; ``SelectDevices`` (keyboard | pointer, ``persist_mode``
2 — until revoked — and the stored ``restore_token`` if there is one, so an approved device
need not ask again where the portal honours tokens); ``SelectSources`` (monitors, ``multiple``:
the person may share several, the pointer drawn into the frames); ``Start`` → the streams
(PipeWire node, size, place: one per monitor shared) and maybe a new restore token;
``OpenPipeWireRemote`` → a file descriptor of the PipeWire connection the portal filtered to this
session's nodes, handed to the ``gst-launch`` child. Each of the first four answers through a
``Request`` object's ``Response`` signal, subscribed to *before* the call (the request's path is
predictable from our unique name and our ``handle_token``). Input is
``NotifyPointerMotionAbsolute`` (pixels of the stream of the monitor shown; on "all monitors",
which the portal cannot cast as one stream, of the monitor under the point),
``NotifyPointerButton`` (evdev), ``NotifyPointerAxisDiscrete`` and ``NotifyKeyboardKeysym``.

Where the portal offers ScreenCast but no RemoteDesktop (wlroots desktops: xdg-desktop-portal-wlr
implements ScreenCast only), the session is a **view-only** ScreenCast session: the same calls on
the ScreenCast interface without ``SelectDevices`` (``persist_mode`` and the token go with
``SelectSources`` there), no input device, and input methods refuse with :data:`NO_REMOTE_INPUT`.
Which one is decided from what the portal says it offers (:func:`portal_offer`), before any call —
not from a failed RemoteDesktop call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..capture import Monitor
from .mutter import MAX_CAST_MONITORS, SHIFT_L, StreamInfo, matching, monitor_list

log = logging.getLogger(__name__)

PORTAL_NAME = "org.freedesktop.portal.Desktop"
PORTAL_PATH = "/org/freedesktop/portal/desktop"
RD = "org.freedesktop.portal.RemoteDesktop"
SC = "org.freedesktop.portal.ScreenCast"
REQUEST = "org.freedesktop.portal.Request"
SESSION = "org.freedesktop.portal.Session"
#: Device bits of SelectDevices ``types`` and of Start's ``devices`` answer (4 would be a touchscreen).
KEYBOARD, POINTER = 1, 2
#: SelectDevices ``types``: what Helpline asks for.
DEVICES = KEYBOARD | POINTER
#: SelectSources ``types``: a monitor.
SOURCE_MONITOR = 1
#: ``cursor_mode`` 2: embedded in the frames (the viewer shows the pointer as it is; the gst-launch reader).
CURSOR_EMBEDDED = 2
#: ``cursor_mode`` 4: left out of the frames, sent as cursor metadata (the native reader, native.py).
CURSOR_METADATA = 4
#: ``persist_mode`` 2: the permission lasts until revoked (a restore token comes back where the portal keeps it).
PERSIST_UNTIL_REVOKED = 2
#: Upper bound of a call, and of a Response that needs no person (CreateSession, SelectDevices, SelectSources).
CALL_TIMEOUT_S = 10.0
#: How long the person has to answer the portal's own chooser after ``Start``.
CHOOSER_TIMEOUT_S = 120.0
#: A restore token is an opaque string (a UUID in practice); anything longer is not kept.
MAX_TOKEN_LEN = 512
#: Why a ScreenCast-only session takes no input: the technician sees it (viewer, console).
NO_REMOTE_INPUT = "this desktop's portal offers no remote input"

_tokens = itertools.count(1)


class PortalError(RuntimeError):
    """The portal is missing, refused, or did not answer."""


class PortalCancelled(PortalError):
    """The person pressed Cancel in the portal's chooser (response 1)."""


@dataclass(frozen=True, slots=True)
class PortalOffer:
    """What the desktop's xdg-desktop-portal implements, from its own properties (0: not offered)."""

    #: ``org.freedesktop.portal.RemoteDesktop`` ``version`` (0: the interface is not there: no backend implements it).
    remote_desktop: int
    #: ``org.freedesktop.portal.ScreenCast`` ``AvailableSourceTypes`` (bit 1: monitors).
    source_types: int

    @property
    def monitors(self) -> bool:
        return bool(self.source_types & SOURCE_MONITOR)


async def portal_offer(bus: MessageBus) -> PortalOffer:
    """Ask the portal which of RemoteDesktop and ScreenCast it implements (a frontend exports only the interfaces
    some backend of this desktop implements, so a missing property means a missing portal)."""
    async def prop(interface: str, name: str) -> int:
        try:
            reply = await _raw_call(bus, Message(destination=PORTAL_NAME, path=PORTAL_PATH,
                                                 interface="org.freedesktop.DBus.Properties", member="Get",
                                                 signature="ss", body=[interface, name]))
        except PortalError:
            return 0
        value = reply.body[0].value if reply.body and isinstance(reply.body[0], Variant) else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    return PortalOffer(await prop(RD, "version"), await prop(SC, "AvailableSourceTypes"))


@dataclass(frozen=True, slots=True)
class PortalStart:
    """What ``Start`` granted: the streams (one per monitor shared), whether input is allowed, the next token."""

    stream: StreamInfo
    devices: int
    restore_token: str | None
    streams: tuple[StreamInfo, ...] = ()

    def all_streams(self) -> tuple[StreamInfo, ...]:
        return self.streams or (self.stream,)


def valid_token(token: object) -> str | None:
    """``token`` if it is a plausible restore token (a short printable string), else None."""
    if isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_LEN and token.isprintable():
        return token
    return None


class PortalSession:
    """A started portal RemoteDesktop session with one ScreenCast stream (use :meth:`open`)."""

    def __init__(self, bus: MessageBus, handle: str, started: PortalStart, pipewire_fd: int) -> None:
        self._bus = bus
        self.handle = handle
        self.started = started
        self.stream = started.stream
        #: The viewer's monitor list: index 0 all shared monitors (node 0 when several: no stream shows them all).
        self.monitors = monitor_list(started.all_streams())
        #: The PipeWire remote for the reader child (``pipewiresrc fd=…``); owned by this session until closed.
        self.pipewire_fd = pipewire_fd
        #: The cursor mode the portal was asked for (metadata only where it offers it).
        self.cursor_mode = CURSOR_EMBEDDED
        #: False: a ScreenCast-only session (the portal offers no RemoteDesktop): input methods refuse.
        self.remote_input = True
        self.closed = asyncio.Event()
        bus.add_message_handler(self._on_message)

    @classmethod
    async def open(cls, bus_address: str | None = None, restore_token: str | None = None,
                   chooser_timeout_s: float = CHOOSER_TIMEOUT_S, cursor_mode: int = CURSOR_EMBEDDED) -> PortalSession:
        """Connect, create and start the session (the portal may ask the person), open its PipeWire remote.

        ``cursor_mode`` :data:`CURSOR_METADATA` is asked for only when the portal's ``AvailableCursorModes`` has it
        (else the pointer stays embedded); the mode used is the session's ``cursor_mode``. Without a RemoteDesktop
        portal (but with monitor ScreenCast) the session is ScreenCast only, view-only (``remote_input`` False)."""
        try:
            bus = await MessageBus(bus_address=bus_address, bus_type=BusType.SESSION, negotiate_unix_fd=True).connect()
        except Exception as exc:
            raise PortalError(f"cannot connect to the session bus: {exc}") from exc
        handle = ""
        try:
            offer = await portal_offer(bus)
            remote_input = offer.remote_desktop > 0
            if not remote_input and not offer.monitors:
                raise PortalError("this desktop's portal offers neither RemoteDesktop nor a ScreenCast of monitors")
            if not remote_input:
                log.info("portal: ScreenCast only (no RemoteDesktop portal on this desktop): a view-only session")
            iface = RD if remote_input else SC
            session_token = f"helpline{secrets.token_hex(4)}"
            created = await _request(bus, iface, "CreateSession", "a{sv}",
                                     lambda t: [{"handle_token": Variant("s", t),
                                                 "session_handle_token": Variant("s", session_token)}],
                                     CALL_TIMEOUT_S)
            handle = created.then_get("session_handle")
            await _match(bus, f"type='signal',sender='{PORTAL_NAME}',path='{handle}',interface='{SESSION}'")
            options: dict[str, Variant] = {"persist_mode": Variant("u", PERSIST_UNTIL_REVOKED)}
            if restore_token:
                options["restore_token"] = Variant("s", restore_token)
            if remote_input:
                await _request(bus, RD, "SelectDevices", "oa{sv}",
                               lambda t: [handle, {"handle_token": Variant("s", t), "types": Variant("u", DEVICES),
                                                   **options}], CALL_TIMEOUT_S)
            if cursor_mode != CURSOR_EMBEDDED and not await _cursor_mode_available(bus, cursor_mode):
                log.info("portal: cursor mode %d not offered; the pointer is drawn into the frames", cursor_mode)
                cursor_mode = CURSOR_EMBEDDED
            await _request(bus, SC, "SelectSources", "oa{sv}",
                           lambda t: [handle, {"handle_token": Variant("s", t), "types": Variant("u", SOURCE_MONITOR),
                                               "multiple": Variant("b", True),
                                               "cursor_mode": Variant("u", cursor_mode),
                                               # ScreenCast only: the token and persistence go with the sources.
                                               **({} if remote_input else options)}], CALL_TIMEOUT_S)
            log.info("portal: asking the desktop to start %s session %s (its chooser may show)",
                     "remote desktop" if remote_input else "screen cast", handle)
            results = (await _request(bus, iface, "Start", "osa{sv}",
                                      lambda t: [handle, "", {"handle_token": Variant("s", t)}],
                                      chooser_timeout_s)).results
            started = _parse_start(results)
            if not remote_input:
                started = dataclasses.replace(started, devices=0)  # nothing to grant: no input at all
            fd = await _open_remote(bus, handle)
        except BaseException:
            if handle:
                with contextlib.suppress(Exception):
                    await _close_session(bus, handle)
            bus.disconnect()
            raise
        log.info("portal %s: session %s, PipeWire nodes %s, devices %d, restore token %s",
                 "remote desktop" if remote_input else "screen cast (view-only)", handle,
                 ", ".join(f"{s.node_id} ({s.w}x{s.h} at {s.x},{s.y})" for s in started.all_streams()),
                 started.devices, "returned" if started.restore_token else "not returned")
        if remote_input and started.devices & DEVICES != DEVICES:
            log.warning("portal remote desktop: the desktop granted devices %d of the %d asked for (keyboard 1, "
                        "pointer 2): remote input is not allowed in this session", started.devices, DEVICES)
        session = cls(bus, handle, started, fd)
        session.cursor_mode, session.remote_input = cursor_mode, remote_input
        # As with Mutter's API (the portal drives it on GNOME): the first keys of a fresh virtual keyboard get lost.
        if started.devices & KEYBOARD:
            with contextlib.suppress(PortalError):
                await session.tap_keysym(SHIFT_L)
        return session

    def _on_message(self, message: Message) -> None:
        if message.message_type == MessageType.SIGNAL and message.path == self.handle and message.member == "Closed":
            log.info("the portal closed the remote-desktop session %s", self.handle)
            self.closed.set()

    # --- input (coordinates in the stream's pixel space) -----------------------------------

    async def pointer_motion(self, x: float, y: float, monitor: Monitor | None = None) -> None:
        """Move to (x, y) of the stream showing ``monitor`` (None: the first shared)."""
        cast = self.monitors[matching(self.monitors, monitor)] if monitor is not None else self.stream
        if cast.node_id == 0:  # all monitors: the stream of the monitor under the point, in its own pixels
            cast, x, y = under(self.started.all_streams(), cast.x + x, cast.y + y)
        await self._notify("NotifyPointerMotionAbsolute", "oa{sv}udd", [cast.node_id, float(x), float(y)])

    async def pointer_button(self, evdev_code: int, pressed: bool) -> None:
        await self._notify("NotifyPointerButton", "oa{sv}iu", [evdev_code, int(pressed)])

    async def pointer_axis_discrete(self, axis: int, steps: int) -> None:
        """``axis`` 0 = vertical (positive: down), 1 = horizontal (positive: right)."""
        await self._notify("NotifyPointerAxisDiscrete", "oa{sv}ui", [axis, steps])

    async def keysym(self, keysym: int, pressed: bool) -> None:
        await self._notify("NotifyKeyboardKeysym", "oa{sv}iu", [keysym, int(pressed)])

    async def tap_keysym(self, keysym: int) -> None:
        """Press, then release once the portal took the press — never both in flight at once.

        xdg-desktop-portal handles every method call in a thread of its own
        (``G_DBUS_INTERFACE_SKELETON_FLAGS_HANDLE_METHOD_INVOCATIONS_IN_THREAD``), so two calls in flight
        can reach the backend in either order. A release that overtook its press was ignored by Mutter
        ("Received multiple virtual … key releases") and the press then left the key down for the rest of
        the session: every later press of it was ignored too and the client repeated the held key — typed
        text arrived garbled or not at all (the "one portal session in five gets no input" flake). The
        portal answers as soon as it has forwarded the call to the backend, so this wait is one short
        round trip to the portal, not to the compositor (Mutter's own API, one thread, keeps the order).
        """
        await self.keysym(keysym, True)
        await self.keysym(keysym, False)

    async def open_remote(self) -> int:
        """Another PipeWire remote of this session, for one more reader: a remote serves one client, so a reader
        started after the first (a monitor switch, "all monitors") needs its own. The caller closes it."""
        return await _open_remote(self._bus, self.handle)

    async def _notify(self, member: str, signature: str, args: list[Any]) -> None:
        if not self.remote_input:
            raise PortalError(NO_REMOTE_INPUT)
        await _call(self._bus, RD, member, signature, [self.handle, {}, *args])

    async def close(self) -> None:
        """Close the portal session (the desktop ends the cast) and the PipeWire fd; idempotent."""
        if self.pipewire_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.pipewire_fd)
            self.pipewire_fd = -1
        if self._bus.connected:
            if not self.closed.is_set():
                with contextlib.suppress(PortalError):
                    await _close_session(self._bus, self.handle)
            self._bus.disconnect()
        self.closed.set()


@dataclass(frozen=True, slots=True)
class _Response:
    results: dict[str, Variant]

    def then_get(self, key: str) -> str:
        value = self.results.get(key)
        if value is None or not isinstance(value.value, str):
            raise PortalError(f"the portal's answer has no {key}")
        return value.value


def under(streams: Sequence[StreamInfo], gx: float, gy: float) -> tuple[StreamInfo, float, float]:
    """The stream of the monitor at desktop point (gx, gy) and the point in its pixels; in a gap between
    monitors, the nearest one's nearest pixel."""
    def distance(s: StreamInfo) -> float:
        dx = max(s.x - gx, 0.0, gx - (s.x + s.w - 1))
        dy = max(s.y - gy, 0.0, gy - (s.y + s.h - 1))
        return dx * dx + dy * dy

    best = min(streams, key=distance)
    return best, min(max(gx - best.x, 0.0), best.w - 1.0), min(max(gy - best.y, 0.0), best.h - 1.0)


def _parse_start(results: dict[str, Variant]) -> PortalStart:
    """The granted stream, devices and token; a malformed answer is a PortalError, not a crash."""
    try:
        return _parse_start_unchecked(results)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise PortalError(f"the portal's Start answer is malformed: {exc!r}"[:300]) from exc


def _parse_start_unchecked(results: dict[str, Variant]) -> PortalStart:
    streams = results.get("streams")
    if streams is None or not streams.value:
        raise PortalError("the portal started no stream (no monitor was chosen)")
    parsed: list[StreamInfo] = []
    for node_id, props in streams.value[:MAX_CAST_MONITORS]:
        props = props or {}
        x, y = props["position"].value if "position" in props else (0, 0)
        if "size" not in props:
            raise PortalError("the portal's stream has no size")
        w, h = props["size"].value
        if int(node_id) <= 0:
            raise PortalError(f"the portal's stream has no PipeWire node ({node_id})")
        parsed.append(StreamInfo(int(node_id), int(x), int(y), int(w), int(h)))
    devices = results["devices"].value if "devices" in results else 0
    token = valid_token(results["restore_token"].value) if "restore_token" in results else None
    return PortalStart(parsed[0], int(devices), token, tuple(parsed))


async def _cursor_mode_available(bus: MessageBus, mode: int) -> bool:
    """Whether the ScreenCast portal's ``AvailableCursorModes`` bitmask has ``mode`` (False when it cannot say)."""
    try:
        reply = await _raw_call(bus, Message(destination=PORTAL_NAME, path=PORTAL_PATH,
                                             interface="org.freedesktop.DBus.Properties", member="Get",
                                             signature="ss", body=[SC, "AvailableCursorModes"]))
    except PortalError:
        return False
    value = reply.body[0].value if reply.body and isinstance(reply.body[0], Variant) else None
    return isinstance(value, int) and bool(value & mode)


async def _match(bus: MessageBus, rule: str) -> None:
    await _raw_call(bus, Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                 interface="org.freedesktop.DBus", member="AddMatch", signature="s", body=[rule]))


async def _request(bus: MessageBus, interface: str, member: str, signature: str, body: Any,
                   timeout_s: float) -> _Response:
    """Call a portal method that answers through a Request's Response signal; wait for it within ``timeout_s``."""
    token = f"helpline{next(_tokens)}_{secrets.token_hex(4)}"
    sender = (bus.unique_name or "").lstrip(":").replace(".", "_")
    path = f"{PORTAL_PATH}/request/{sender}/{token}"
    answer: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    def on_message(message: Message) -> None:
        if (message.message_type == MessageType.SIGNAL and message.member == "Response"
                and message.path == path and not answer.done()):
            answer.set_result(list(message.body))

    bus.add_message_handler(on_message)
    try:
        await _match(bus, f"type='signal',sender='{PORTAL_NAME}',path='{path}',interface='{REQUEST}'")
        (request_path,) = await _call(bus, interface, member, signature, body(token))
        if request_path != path:  # an old portal (< 0.9) names the request itself: listen there too
            await _match(bus, f"type='signal',sender='{PORTAL_NAME}',path='{request_path}',interface='{REQUEST}'")
            path = request_path
        try:
            code, results = await asyncio.wait_for(answer, timeout_s)
        except TimeoutError as exc:
            with contextlib.suppress(Exception):
                await _raw_call(bus, Message(destination=PORTAL_NAME, path=path, interface=REQUEST, member="Close"))
            raise PortalError(f"{interface}.{member}: no answer from the portal within {timeout_s:.0f}s") from exc
    finally:
        bus.remove_message_handler(on_message)
    if code == 1:
        raise PortalCancelled(f"the person cancelled the desktop's screen-sharing dialog ({member})")
    if code != 0:
        raise PortalError(f"{interface}.{member}: the portal refused (response {code})")
    return _Response(dict(results))


async def _call(bus: MessageBus, interface: str, member: str, signature: str, body: list[Any]) -> list[Any]:
    reply = await _raw_call(bus, Message(destination=PORTAL_NAME, path=PORTAL_PATH, interface=interface,
                                         member=member, signature=signature, body=body))
    return list(reply.body)


async def _call_fds(bus: MessageBus, interface: str, member: str, signature: str,
                    body: list[Any]) -> tuple[list[Any], list[int]]:
    reply = await _raw_call(bus, Message(destination=PORTAL_NAME, path=PORTAL_PATH, interface=interface,
                                         member=member, signature=signature, body=body))
    return list(reply.body), list(reply.unix_fds or [])


async def _raw_call(bus: MessageBus, message: Message) -> Message:
    """The reply to ``message``; if the caller stops waiting (timeout, cancel) the file descriptors of a reply still
    coming are closed when it comes (dbus-fast drops the reply of a cancelled call with its descriptors open)."""
    call = asyncio.ensure_future(bus.call(message))
    try:
        reply = await asyncio.wait_for(asyncio.shield(call), CALL_TIMEOUT_S)
    except BaseException as exc:
        call.add_done_callback(_close_reply_fds)
        if isinstance(exc, TimeoutError):
            raise PortalError(f"{message.interface}.{message.member}: no answer within {CALL_TIMEOUT_S:.0f}s") from exc
        raise
    if reply is None:
        raise PortalError(f"{message.interface}.{message.member}: no reply")
    if reply.message_type == MessageType.ERROR:
        for fd in reply.unix_fds or []:
            with contextlib.suppress(OSError):
                os.close(fd)
        detail = reply.body[0] if reply.body else ""
        raise PortalError(f"{message.interface}.{message.member}: {reply.error_name}: {detail}")
    return reply


def _close_reply_fds(call: asyncio.Future[Message]) -> None:
    """Close the descriptors of a reply nobody waits for any more (and take its error, so none is logged)."""
    if call.cancelled() or call.exception() is not None:
        return
    reply = call.result()
    for fd in (reply.unix_fds or []) if reply is not None else []:
        with contextlib.suppress(OSError):
            os.close(fd)


async def _open_remote(bus: MessageBus, handle: str) -> int:
    """``OpenPipeWireRemote``: a file descriptor of a PipeWire connection that shows only the session's nodes."""
    (fd_index,), fds = await _call_fds(bus, SC, "OpenPipeWireRemote", "oa{sv}", [handle, {}])
    fd = fds[fd_index] if isinstance(fd_index, int) and 0 <= fd_index < len(fds) else -1
    for other in fds:
        if other != fd:
            os.close(other)
    if fd < 0:
        raise PortalError("OpenPipeWireRemote returned no file descriptor")
    return fd


async def _close_session(bus: MessageBus, handle: str) -> None:
    await _raw_call(bus, Message(destination=PORTAL_NAME, path=handle, interface=SESSION, member="Close"))
