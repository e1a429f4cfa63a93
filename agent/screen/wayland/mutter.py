"""Mutter's remote-desktop D-Bus API: one RemoteDesktop session with its ScreenCast stream.

This is the API gnome-remote-desktop uses (``org.gnome.Mutter.RemoteDesktop`` and
``org.gnome.Mutter.ScreenCast`` on the user's session bus): no portal dialog, because only a
process of the user's own session may call it — which the per-user session helper is. The
order matters and follows gnome-remote-desktop: create the RemoteDesktop session, create a
ScreenCast session bound to its ``SessionId``, ``RecordMonitor`` (the primary monitor, the
pointer drawn into the frames), then ``Start`` the RemoteDesktop session, which starts the
cast; the stream then announces its PipeWire node in ``PipeWireStreamAdded``.

Input goes through the same session (``NotifyPointerMotionAbsolute`` in the stream's pixel
space, ``NotifyPointerButton`` with evdev codes, ``NotifyPointerAxisDiscrete``,
``NotifyKeyboardKeysym``), so Mutter delivers it to native Wayland windows and XWayland ones
alike. D-Bus through dbus-fast (asyncio); every reply is checked and turned into
:class:`MutterError` with the peer's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

log = logging.getLogger(__name__)

RD_NAME = "org.gnome.Mutter.RemoteDesktop"
RD_PATH = "/org/gnome/Mutter/RemoteDesktop"
RD_SESSION = "org.gnome.Mutter.RemoteDesktop.Session"
SC_NAME = "org.gnome.Mutter.ScreenCast"
SC_PATH = "/org/gnome/Mutter/ScreenCast"
SC_SESSION = "org.gnome.Mutter.ScreenCast.Session"
SC_STREAM = "org.gnome.Mutter.ScreenCast.Stream"
PROPS = "org.freedesktop.DBus.Properties"
#: ScreenCast cursor modes: the pointer drawn into the frames (the viewer shows it as it is).
CURSOR_EMBEDDED = 1
#: XK_Shift_L: the harmless key that wakes Mutter's virtual keyboard up at session start.
SHIFT_L = 0xFFE1
#: How long Mutter may take to announce the stream's PipeWire node after Start.
STREAM_TIMEOUT_S = 10.0
#: Upper bound of one D-Bus call (input included): a hung compositor must not hang the session.
CALL_TIMEOUT_S = 5.0


class MutterError(RuntimeError):
    """Mutter's remote-desktop API refused or is not there (no GNOME session, old Mutter …)."""


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """The cast of one monitor: its PipeWire node and where it lies on the desktop."""

    node_id: int
    x: int
    y: int
    w: int
    h: int


class MutterSession:
    """A started RemoteDesktop + ScreenCast session on the session bus (use :meth:`open`)."""

    def __init__(self, bus: MessageBus, rd_path: str, sc_path: str, stream_path: str, stream: StreamInfo) -> None:
        self._bus = bus
        self.rd_path, self.sc_path, self.stream_path = rd_path, sc_path, stream_path
        self.stream = stream
        self.closed = asyncio.Event()
        bus.add_message_handler(self._on_message)

    @classmethod
    async def open(cls, bus_address: str | None = None) -> MutterSession:
        """Connect, create both sessions, start them and wait for the stream's PipeWire node."""
        try:
            bus = await MessageBus(bus_address=bus_address, bus_type=BusType.SESSION).connect()
        except Exception as exc:
            raise MutterError(f"cannot connect to the session bus: {exc}") from exc
        try:
            return await asyncio.wait_for(cls._create(bus), STREAM_TIMEOUT_S + 4 * CALL_TIMEOUT_S)
        except TimeoutError as exc:
            bus.disconnect()
            raise MutterError("Mutter announced no PipeWire stream in time") from exc
        except BaseException:
            bus.disconnect()
            raise

    @classmethod
    async def _create(cls, bus: MessageBus) -> MutterSession:
        (rd_path,) = await _call(bus, RD_NAME, RD_PATH, RD_NAME, "CreateSession")
        (session_id,) = await _call(bus, RD_NAME, rd_path, PROPS, "Get", "ss", [RD_SESSION, "SessionId"])
        (sc_path,) = await _call(bus, SC_NAME, SC_PATH, SC_NAME, "CreateSession", "a{sv}",
                                 [{"remote-desktop-session-id": Variant("s", session_id.value)}])
        (stream_path,) = await _call(bus, SC_NAME, sc_path, SC_SESSION, "RecordMonitor", "sa{sv}",
                                     ["", {"cursor-mode": Variant("u", CURSOR_EMBEDDED)}])
        node: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_added(message: Message) -> None:
            if (message.message_type == MessageType.SIGNAL and message.path == stream_path
                    and message.member == "PipeWireStreamAdded" and not node.done()):
                node.set_result(int(message.body[0]))

        rule = f"type='signal',sender='{SC_NAME}',path='{stream_path}',interface='{SC_STREAM}'"
        await _call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
                    [rule])
        await _call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
                    [f"type='signal',sender='{RD_NAME}',path='{rd_path}',interface='{RD_SESSION}',member='Closed'"])
        bus.add_message_handler(on_added)
        try:
            await _call(bus, RD_NAME, rd_path, RD_SESSION, "Start")
            node_id = await asyncio.wait_for(node, STREAM_TIMEOUT_S)
        finally:
            bus.remove_message_handler(on_added)
        # Mutter creates its virtual keyboard on the first key event and the first few keys typed then go
        # nowhere (seen with foot: "   echo" arrived as "cho"); a Shift tap now readies it for the technician.
        for down in (True, False):
            await _call(bus, RD_NAME, rd_path, RD_SESSION, "NotifyKeyboardKeysym", "ub", [SHIFT_L, down])
        (params,) = await _call(bus, SC_NAME, stream_path, PROPS, "Get", "ss", [SC_STREAM, "Parameters"])
        values: dict[str, Variant] = params.value
        x, y = values["position"].value if "position" in values else (0, 0)
        w, h = values["size"].value
        stream = StreamInfo(node_id, int(x), int(y), int(w), int(h))
        log.info("Mutter remote desktop: session %s, stream %s, PipeWire node %d, %dx%d at %d,%d",
                 rd_path, stream_path, node_id, w, h, x, y)
        return cls(bus, rd_path, sc_path, stream_path, stream)

    def _on_message(self, message: Message) -> None:
        if message.message_type == MessageType.SIGNAL and message.path == self.rd_path and message.member == "Closed":
            log.info("Mutter closed the remote-desktop session %s", self.rd_path)
            self.closed.set()

    # --- input (all coordinates in the stream's pixel space) ----------------------------

    async def pointer_motion(self, x: float, y: float) -> None:
        await self._rd("NotifyPointerMotionAbsolute", "sdd", [self.stream_path, float(x), float(y)])

    async def pointer_button(self, evdev_code: int, pressed: bool) -> None:
        await self._rd("NotifyPointerButton", "ib", [evdev_code, pressed])

    async def pointer_axis_discrete(self, axis: int, steps: int) -> None:
        """``axis`` 0 = vertical (positive: down), 1 = horizontal (positive: right)."""
        await self._rd("NotifyPointerAxisDiscrete", "ui", [axis, steps])

    async def keysym(self, keysym: int, pressed: bool) -> None:
        await self._rd("NotifyKeyboardKeysym", "ub", [keysym, pressed])

    async def tap_keysym(self, keysym: int) -> None:
        """Press and release ``keysym`` with both calls written at once: Wayland clients repeat keys on their own
        clock, so a release one round trip of a loaded compositor behind its press typed "/////" in a
        terminal (seen in the test); written together they reach Mutter in one read."""
        await asyncio.gather(*(_call(self._bus, RD_NAME, self.rd_path, RD_SESSION, "NotifyKeyboardKeysym", "ub",
                                     [keysym, down]) for down in (True, False)))

    async def _rd(self, member: str, signature: str, body: list[Any]) -> None:
        await _call(self._bus, RD_NAME, self.rd_path, RD_SESSION, member, signature, body)

    async def close(self) -> None:
        """Stop the session (Mutter ends the cast and its PipeWire stream) and disconnect; idempotent."""
        if self._bus.connected:
            if not self.closed.is_set():
                with contextlib.suppress(MutterError, TimeoutError):
                    await self._rd("Stop", "", [])
            self._bus.disconnect()
        self.closed.set()


async def _call(bus: MessageBus, destination: str, path: str, interface: str, member: str,
                signature: str = "", body: list[Any] | None = None) -> list[Any]:
    message = Message(destination=destination, path=path, interface=interface, member=member,
                      signature=signature, body=body or [])
    try:
        reply = await asyncio.wait_for(bus.call(message), CALL_TIMEOUT_S)
    except TimeoutError as exc:
        raise MutterError(f"{interface}.{member}: no answer within {CALL_TIMEOUT_S}s") from exc
    if reply is None:
        raise MutterError(f"{interface}.{member}: no reply")
    if reply.message_type == MessageType.ERROR:
        detail = reply.body[0] if reply.body else ""
        raise MutterError(f"{interface}.{member}: {reply.error_name}: {detail}")
    return list(reply.body)
