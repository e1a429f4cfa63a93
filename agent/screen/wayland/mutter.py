"""Mutter's remote-desktop D-Bus API: one RemoteDesktop session with its ScreenCast stream.

This is the API gnome-remote-desktop uses (``org.gnome.Mutter.RemoteDesktop`` and
``org.gnome.Mutter.ScreenCast`` on the user's session bus): no portal dialog, because only a
process of the user's own session may call it — which the per-user session helper is. The
order matters and follows gnome-remote-desktop: create the RemoteDesktop session, create a
ScreenCast session bound to its ``SessionId``, record the monitors (the pointer drawn into the
frames for the gst-launch reader; left out and sent as cursor metadata for the native one, native.py),
then ``Start`` the RemoteDesktop session, which starts the casts; each stream then
announces its PipeWire node in ``PipeWireStreamAdded``.

**Every monitor.** The monitors are listed by ``org.gnome.Mutter.DisplayConfig.GetCurrentState``
(one connector per logical monitor) and each gets a ``RecordMonitor`` stream; with more than one,
a ``RecordArea`` stream over their bounding box is the "all monitors" view (index 0, as mss
counts). All are recorded *before* ``Start``, and a monitor switch reads another of them
(agent/screen/wayland/casts.py) rather than recording anew: a stream has no ``Stop`` in Mutter 43
(only the session stops), so a stream recorded per switch would live on until the session ends,
and a switch needs no D-Bus round trip. (A ``RecordMonitor`` on a started session is possible: its
stream starts only on the stream's own ``Start()`` — without it no ``PipeWireStreamAdded`` came,
with it the node was announced; tried on the headless Mutter 43.8. That is how a monitor plugged
in during a session is followed — recorded as an area, see agent/screen/wayland/hotplug.py, which also
renews the session when Mutter closes it over a cast monitor's removal.) A stream
nobody reads costs Mutter nothing: it paints a cast only while a PipeWire consumer is connected.

Input goes through the same session (``NotifyPointerMotionAbsolute`` in the pixel space of the
stream of the monitor shown, named by its object path — checked on the headless Mutter: (100, 100)
on the second monitor's stream put the pointer at (1280 + 100, 100) of the desktop;
``NotifyPointerButton`` with evdev codes, ``NotifyPointerAxisDiscrete``, ``NotifyKeyboardKeysym``),
so Mutter delivers it to native Wayland windows and XWayland ones alike. D-Bus through dbus-fast
(asyncio); every reply is checked and turned into :class:`MutterError` with the peer's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..capture import Monitor

log = logging.getLogger(__name__)

RD_NAME = "org.gnome.Mutter.RemoteDesktop"
RD_PATH = "/org/gnome/Mutter/RemoteDesktop"
RD_SESSION = "org.gnome.Mutter.RemoteDesktop.Session"
SC_NAME = "org.gnome.Mutter.ScreenCast"
SC_PATH = "/org/gnome/Mutter/ScreenCast"
SC_SESSION = "org.gnome.Mutter.ScreenCast.Session"
SC_STREAM = "org.gnome.Mutter.ScreenCast.Stream"
PROPS = "org.freedesktop.DBus.Properties"
DC_NAME = "org.gnome.Mutter.DisplayConfig"
DC_PATH = "/org/gnome/Mutter/DisplayConfig"
#: Monitors cast at most (the viewer's list holds 16 entries, the first being all of them).
MAX_CAST_MONITORS = 15
#: ScreenCast cursor modes: the pointer drawn into the frames (the viewer shows it as it is) — for the gst-launch
#: reader, which cannot pass cursor metadata on.
CURSOR_EMBEDDED = 1
#: The pointer left out of the frames, its position and image sent as SPA_META_Cursor (the native reader's mode).
CURSOR_METADATA = 2
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
    primary: bool = False
    #: The monitor's connector (Mutter's API; hot-plug follows monitors by it); "" for all monitors and the portal.
    name: str = ""

    def monitor(self) -> Monitor:
        return Monitor(self.x, self.y, self.w, self.h, self.primary)


def monitor_list(streams: Sequence[StreamInfo]) -> list[StreamInfo]:
    """The viewer's monitor list from the monitors' streams: index 0 = all of them, then each.

    With one monitor "all" is that monitor; with several, index 0 has no stream of its own here
    (node 0, the bounding box): the caller puts the one that shows all of them there.
    """
    if not streams:
        raise ValueError("no monitor stream")
    if len(streams) == 1:
        return [streams[0], streams[0]]
    x0, y0 = min(s.x for s in streams), min(s.y for s in streams)
    x1, y1 = max(s.x + s.w for s in streams), max(s.y + s.h for s in streams)
    return [StreamInfo(0, x0, y0, x1 - x0, y1 - y0), *streams]


def matching(streams: Sequence[StreamInfo], monitor: Monitor | None) -> int:
    """Index of the stream that shows ``monitor`` (same place and size); 1 (the first monitor) when none does."""
    if monitor is not None:
        order: list[int] = [*range(1, len(streams)), 0]
        for index in order:
            s = streams[index]
            if (s.x, s.y, s.w, s.h) == (monitor.x, monitor.y, monitor.w, monitor.h):
                return index
    return 1


class MutterSession:
    """A started RemoteDesktop + ScreenCast session on the session bus (use :meth:`open`).

    ``casts``: (stream object path, stream) per entry of the viewer's monitor list — index 0 all
    monitors, then each; ``stream_path``/``stream`` are the primary monitor's.
    """

    def __init__(self, bus: MessageBus, rd_path: str, sc_path: str, casts: Sequence[tuple[str, StreamInfo]],
                 cursor_mode: int = CURSOR_EMBEDDED) -> None:
        self._bus = bus
        #: Every stream of the session (renewals and hot-plugged areas too) is recorded in this cursor mode.
        self.cursor_mode = cursor_mode
        self.rd_path, self.sc_path = rd_path, sc_path
        self.casts = list(casts)
        self.monitors = [info for _path, info in self.casts]
        self.stream_path, self.stream = self.casts[1]
        self.closed = asyncio.Event()
        #: Set on DisplayConfig's ``MonitorsChanged`` (hotplug.py clears it and reads the layout again).
        self.layout_changed = asyncio.Event()
        #: Streams recorded with ``RecordMonitor``: they follow their monitor when it moves (areas stay put).
        self.following = {path for path, info in self.casts if info.name}
        #: Streams recorded in this session (none can be stopped before the session: hotplug.py bounds them).
        self.recorded = len({path for path, _info in self.casts})
        #: With ``renewable`` (hotplug.py follows the layout), Mutter's ``Closed`` sets ``lost``, not ``closed``:
        #: the follower renews the session when a monitor it cast went away, else sets ``closed``.
        self.renewable = False
        self.lost = asyncio.Event()
        self.renewals = 0
        self._stopping = False
        bus.add_message_handler(self._on_message)

    @classmethod
    async def open(cls, bus_address: str | None = None, connectors: Sequence[str] | None = None,
                   cursor_mode: int = CURSOR_EMBEDDED) -> MutterSession:
        """Connect, create both sessions, record, start them and wait for every stream's PipeWire node.

        ``connectors``: the monitors to cast ("" = the primary); None = every monitor of the desktop.
        ``cursor_mode``: :data:`CURSOR_EMBEDDED` (the default) or :data:`CURSOR_METADATA`.
        """
        try:
            bus = await MessageBus(bus_address=bus_address, bus_type=BusType.SESSION).connect()
        except Exception as exc:
            raise MutterError(f"cannot connect to the session bus: {exc}") from exc
        try:
            return await asyncio.wait_for(cls._create(bus, connectors, cursor_mode),
                                          STREAM_TIMEOUT_S + 8 * CALL_TIMEOUT_S)
        except TimeoutError as exc:
            bus.disconnect()
            raise MutterError("Mutter announced no PipeWire stream in time") from exc
        except BaseException:
            bus.disconnect()
            raise

    @classmethod
    async def _create(cls, bus: MessageBus, connectors: Sequence[str] | None, cursor_mode: int) -> MutterSession:
        return cls(bus, *await cls._start(bus, connectors, cursor_mode), cursor_mode=cursor_mode)

    async def renew(self) -> None:
        """A new RemoteDesktop + ScreenCast session on the same bus, every monitor recorded anew, in place of
        the one Mutter closed because a monitor it cast went away (hotplug.py decides when)."""
        rd_path, sc_path, casts = await asyncio.wait_for(self._start(self._bus, None, self.cursor_mode),
                                                         STREAM_TIMEOUT_S + 8 * CALL_TIMEOUT_S)
        self.rd_path, self.sc_path = rd_path, sc_path
        self.replace_casts(casts)
        self.following = {path for path, info in self.casts if info.name}
        self.recorded += len({path for path, _info in self.casts})
        self.renewals += 1
        self.lost.clear()

    @staticmethod
    async def _start(bus: MessageBus, connectors: Sequence[str] | None, cursor_mode: int
                     ) -> tuple[str, str, list[tuple[str, StreamInfo]]]:
        (rd_path,) = await _call(bus, RD_NAME, RD_PATH, RD_NAME, "CreateSession")
        (session_id,) = await _call(bus, RD_NAME, rd_path, PROPS, "Get", "ss", [RD_SESSION, "SessionId"])
        (sc_path,) = await _call(bus, SC_NAME, SC_PATH, SC_NAME, "CreateSession", "a{sv}",
                                 [{"remote-desktop-session-id": Variant("s", session_id.value)}])
        if connectors is None:
            listed = await list_connectors(bus)
            wanted = [c for c, _primary in listed] or [""]
            primaries = {c for c, primary in listed if primary} or {""}
        else:
            wanted, primaries = list(connectors), {""}
        recording = {"cursor-mode": Variant("u", cursor_mode)}
        recorded: list[tuple[str, tuple[int, int, int, int], bool, str]] = []
        for connector in wanted[:MAX_CAST_MONITORS]:
            (path,) = await _call(bus, SC_NAME, sc_path, SC_SESSION, "RecordMonitor", "sa{sv}", [connector, recording])
            recorded.append((path, await _geometry(bus, path), connector in primaries, connector or "primary"))
        if len(recorded) > 1:  # all of them: Mutter paints the bounding box (the gaps black) into one stream
            union = monitor_list([StreamInfo(0, *geometry) for _p, geometry, _primary, _c in recorded])[0]
            (area_path,) = await _call(bus, SC_NAME, sc_path, SC_SESSION, "RecordArea", "iiiia{sv}",
                                       [union.x, union.y, union.w, union.h, recording])
            recorded.insert(0, (area_path, (union.x, union.y, union.w, union.h), False, ""))
        paths = [path for path, _g, _p, _c in recorded]
        nodes: dict[str, int] = {}
        all_added = asyncio.get_running_loop().create_future()

        def on_added(message: Message) -> None:
            if (message.message_type == MessageType.SIGNAL and message.path in paths
                    and message.member == "PipeWireStreamAdded"):
                nodes[message.path] = int(message.body[0])
                if len(nodes) == len(paths) and not all_added.done():
                    all_added.set_result(None)

        for path in paths:
            await _call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch",
                        "s", [f"type='signal',sender='{SC_NAME}',path='{path}',interface='{SC_STREAM}'"])
        await _call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
                    [f"type='signal',sender='{RD_NAME}',path='{rd_path}',interface='{RD_SESSION}',member='Closed'"])
        await _call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
                    [f"type='signal',sender='{DC_NAME}',path='{DC_PATH}',interface='{DC_NAME}',"
                     "member='MonitorsChanged'"])
        bus.add_message_handler(on_added)
        try:
            await _call(bus, RD_NAME, rd_path, RD_SESSION, "Start")
            await asyncio.wait_for(all_added, STREAM_TIMEOUT_S)
        finally:
            bus.remove_message_handler(on_added)
        # Mutter creates its virtual keyboard on the first key event and the first few keys typed then go
        # nowhere (seen with foot: "   echo" arrived as "cho"); a Shift tap now readies it for the technician.
        for down in (True, False):
            await _call(bus, RD_NAME, rd_path, RD_SESSION, "NotifyKeyboardKeysym", "ub", [SHIFT_L, down])
        streams = [(path, StreamInfo(nodes[path], *geometry, primary, connector))
                   for path, geometry, primary, connector in recorded]
        casts = streams if len(streams) > 1 else [streams[0], streams[0]]
        for index, (path, s) in enumerate(casts):
            log.info("Mutter remote desktop: session %s, monitor %d%s: stream %s, PipeWire node %d, %dx%d at %d,%d",
                     rd_path, index, " (all)" if index == 0 and len(streams) > 1 else "", path, s.node_id, s.w, s.h,
                     s.x, s.y)
        return rd_path, sc_path, casts

    def _on_message(self, message: Message) -> None:
        if message.message_type != MessageType.SIGNAL:
            return
        if message.path == self.rd_path and message.member == "Closed":
            log.info("Mutter closed the remote-desktop session %s", self.rd_path)
            (self.lost if self.renewable and not self._stopping else self.closed).set()
        elif message.path == DC_PATH and message.interface == DC_NAME and message.member == "MonitorsChanged":
            self.layout_changed.set()

    @property
    def bus(self) -> MessageBus:
        return self._bus

    def replace_casts(self, casts: Sequence[tuple[str, StreamInfo]]) -> None:
        """The viewer's list after a layout change (hotplug.py): input goes through these streams from now on."""
        self.casts = list(casts)
        self.monitors = [info for _path, info in self.casts]
        self.stream_path, self.stream = self.casts[1]

    async def record_area(self, x: int, y: int, w: int, h: int) -> tuple[str, int]:
        """Record the area on the started session and start its stream: (stream path, PipeWire node).

        On a started session a stream starts only on its own ``Start()`` (Mutter 43.8). An area, not
        ``RecordMonitor``: when a monitor cast by ``RecordMonitor`` goes away Mutter closes the stream and,
        with it, the whole session (seen on the headless Mutter 43.8); an area stream outlives its monitor.
        """
        (path,) = await _call(self._bus, SC_NAME, self.sc_path, SC_SESSION, "RecordArea", "iiiia{sv}",
                              [x, y, w, h, {"cursor-mode": Variant("u", self.cursor_mode)}])
        self.recorded += 1
        added: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_added(message: Message) -> None:
            if (message.message_type == MessageType.SIGNAL and message.path == path
                    and message.member == "PipeWireStreamAdded" and not added.done()):
                added.set_result(int(message.body[0]))

        await _call(self._bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch",
                    "s", [f"type='signal',sender='{SC_NAME}',path='{path}',interface='{SC_STREAM}'"])
        self._bus.add_message_handler(on_added)
        try:
            await _call(self._bus, SC_NAME, path, SC_STREAM, "Start")
            try:
                node = await asyncio.wait_for(added, STREAM_TIMEOUT_S)
            except TimeoutError as exc:
                raise MutterError(f"no PipeWire node for the area stream {path} in time") from exc
        finally:
            self._bus.remove_message_handler(on_added)
        log.info("Mutter remote desktop: session %s, area stream %s, PipeWire node %d, %dx%d at %d,%d",
                 self.rd_path, path, node, w, h, x, y)
        return path, node

    # --- input (all coordinates in the stream's pixel space) ----------------------------

    async def pointer_motion(self, x: float, y: float, monitor: Monitor | None = None) -> None:
        """Move to (x, y) of the stream showing ``monitor`` (the one the viewer sees; None: the primary)."""
        path = self.casts[matching(self.monitors, monitor)][0] if monitor is not None else self.stream_path
        await self._rd("NotifyPointerMotionAbsolute", "sdd", [path, float(x), float(y)])

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
        self._stopping = True
        if self._bus.connected:
            if not self.closed.is_set():
                with contextlib.suppress(MutterError, TimeoutError):
                    await self._rd("Stop", "", [])
            self._bus.disconnect()
        self.closed.set()


async def list_connectors(bus: MessageBus) -> list[tuple[str, bool]]:
    """(connector, primary) of each logical monitor, the primary first (as RandR lists X11's), then left to right
    and top to bottom; [] when Mutter says nothing.

    ``GetCurrentState`` answers ``(serial, monitors, logical_monitors, properties)``; a logical monitor is
    ``(x, y, scale, transform, primary, [(connector, vendor, product, serial)], properties)`` — mirrored
    monitors share one, and its first connector is cast.
    """
    try:
        _serial, _monitors, logical, _props = await _call(bus, DC_NAME, DC_PATH, DC_NAME, "GetCurrentState")
        found = [(int(lm[1]), int(lm[0]), str(lm[5][0][0]), bool(lm[4])) for lm in logical if lm[5]]
    except (MutterError, ValueError, TypeError, IndexError) as exc:
        log.warning("Mutter's DisplayConfig listed no monitors (%s): casting the primary monitor only", exc)
        return []
    return [(connector, primary) for _y, _x, connector, primary in sorted(found, key=lambda f: (not f[3], f[1], f[0]))]


async def _geometry(bus: MessageBus, stream_path: str) -> tuple[int, int, int, int]:
    """A monitor stream's place and size in the desktop's layout (its ``Parameters``, known before ``Start``)."""
    (params,) = await _call(bus, SC_NAME, stream_path, PROPS, "Get", "ss", [SC_STREAM, "Parameters"])
    values: dict[str, Variant] = params.value
    try:
        x, y = values["position"].value if "position" in values else (0, 0)
        w, h = values["size"].value
        return int(x), int(y), int(w), int(h)
    except (KeyError, ValueError, TypeError) as exc:
        raise MutterError(f"stream {stream_path} has no usable size: {exc!r}") from exc


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
