"""Which capture backend a screen session uses, and the Wayland one put together.

The choice is made at run time from the user's session, as logind and the display manager
describe it to the session helper: ``XDG_SESSION_TYPE`` first (``wayland`` or ``x11``), else
the presence of ``WAYLAND_DISPLAY``. ``HELPLINE_SCREEN_BACKEND`` (``x11`` / ``wayland``)
overrides both, for an administrator who knows better and for benchmarks. Under Wayland an X11
grab would see only XWayland windows (or nothing), so there is no silent fallback to X11:
a Wayland session whose compositor offers no remote-desktop API ends the session with the
reason, which the technician sees.

Under Wayland there are two ways in (:func:`pick_wayland`): Mutter's own remote-desktop API
when ``org.gnome.Mutter.RemoteDesktop`` is on the user's session bus (GNOME: no dialog), else
the xdg-desktop-portal (KDE, wlroots desktops: the desktop's chooser asks the person once more,
after Helpline's own prompt). ``[screen] wayland_backend = "auto" | "mutter" | "portal"`` in the
agent's configuration file (``HELPLINE_WAYLAND_BACKEND`` overrides) forces one of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import tomllib
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from . import mutter, portal
from .casts import CastSet, StreamReader
from .frames import PipeWireCapture, PipeWireError
from .hotplug import follow
from .injector import MutterInjector
from .keymap import XKeymap
from .mutter import RD_NAME, MutterError, MutterSession, StreamInfo
from .native import NativeCapture, NativeChoice, native_reader
from .portal import KEYBOARD, POINTER, PortalCancelled, PortalError, PortalSession
from .stream_cursor import StreamCursor
from .tokens import RestoreTokenStore

log = logging.getLogger(__name__)

Backend = Literal["x11", "wayland"]
WaylandPath = Literal["mutter", "portal"]
Preference = Literal["auto", "mutter", "portal"]
#: The agent's configuration file, whose ``[screen]`` table this reads (the session helper can read it too).
DEFAULT_CONFIG = Path("/etc/helpline/agent.toml")
#: How long the check for Mutter's API on the session bus may take.
PROBE_TIMEOUT_S = 5.0


class WaylandUnavailable(RuntimeError):
    """The Wayland desktop cannot be shared; ``code`` is the viewer's error code, the message its reason."""

    def __init__(self, message: str, *, backend: str, code: str = "backend_unavailable") -> None:
        super().__init__(message)
        self.backend, self.code = backend, code


def choose_backend(env: Mapping[str, str] | None = None, display: str | None = None) -> Backend:
    """X11 or Wayland for the session described by ``env`` (default: this process's environment).

    A ``display`` that is not the session's own ``DISPLAY`` names another X server (an Xvfb of
    a test or the demo started from a Wayland desktop): that one is captured with X11.
    """
    env = os.environ if env is None else env
    forced = env.get("HELPLINE_SCREEN_BACKEND", "").strip().lower()
    if forced in ("x11", "wayland"):
        return forced  # type: ignore[return-value]
    if display and display != env.get("DISPLAY"):
        return "x11"
    kind = env.get("XDG_SESSION_TYPE", "").strip().lower()
    if kind in ("x11", "wayland"):
        return kind  # type: ignore[return-value]
    return "wayland" if env.get("WAYLAND_DISPLAY") else "x11"


#: The viewer's notice when the desktop granted no (or not all) input devices: the session is view-only in fact.
INPUT_NOT_GRANTED = "input_not_granted"


def missing_input(devices: int) -> str:
    """What of keyboard and pointer ``devices`` (the portal's bitmask) lacks, in words; "" when both are there."""
    lacking = [name for bit, name in ((KEYBOARD, "keyboard"), (POINTER, "pointer")) if not devices & bit]
    return " and ".join(lacking)


class _StartedSession:
    """What every Wayland backend does once its session is started: input through the session, and on
    close the stream reader first, then the session."""

    session: MutterSession | PortalSession
    capture: CastSet
    #: The pointer from the streams' cursor metadata (native reader); None: it is drawn into the frames.
    cursor: StreamCursor | None = None
    #: Which program reads the PipeWire frames: "helpline-pwcast" or "gst-launch-1.0".
    reader: str = "gst-launch-1.0"
    #: The layout's keys as XWayland shows them, opened with the first injector (None: no XWayland, or not yet).
    _keymap: XKeymap | None = None

    @property
    def devices(self) -> int:
        """The input devices the desktop granted (keyboard 1 | pointer 2): Mutter's API grants both."""
        return KEYBOARD | POINTER

    @property
    def view_only(self) -> bool:
        """No input device at all was granted: the session can only show the screen."""
        return not self.devices & (KEYBOARD | POINTER)

    def input_notice(self) -> str:
        """Why remote input will not work, for the technician; "" when keyboard and pointer were granted."""
        lacking = missing_input(self.devices)
        if not lacking:
            return ""
        effect = "the session is view-only" if self.view_only else f"{lacking} input is refused"
        return (f"the desktop did not grant remote {lacking} input (on GNOME: \"Allow remote interaction\" was "
                f"left off in its screen-sharing dialog); the screen is shared, {effect}")

    def injector(self) -> MutterInjector:
        """An injector bound to this session, for the running event loop (refusing the devices not granted, and
        text the layout cannot type where XWayland's ``DISPLAY`` shows the layout: keymap.py)."""
        display = os.environ.get("DISPLAY", "")
        if display and self._keymap is None:
            self._keymap = XKeymap(display)
        return MutterInjector(self.session, asyncio.get_running_loop(), self.devices, self._keymap)

    async def close(self) -> None:
        await asyncio.to_thread(self.capture.close)
        if self._keymap is not None:
            await asyncio.to_thread(self._keymap.close)
        await self.session.close()


class _RemoteHandoff:
    """One PipeWire remote passed from the loop to a waiting thread, or closed if that thread gave up on it.

    A timed-out ``Future.result`` leaves the coroutine running, and a cancelled future drops the result it
    gets later: without this, each failed switch would leak the fd that arrives after all.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._abandoned = False

    async def fill(self, remote: Coroutine[Any, Any, int]) -> None:
        fd = await remote
        with self._lock:
            if not self._abandoned:
                self._fd, fd = fd, -1
        if fd >= 0:
            os.close(fd)

    def take(self) -> int:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is None:
            raise PipeWireError("the portal gave no PipeWire remote")
        return fd

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _fresh_remotes(session: PortalSession) -> Callable[[], int]:
    """A new PipeWire remote of the portal session, asked for from the capture thread on the session's loop.

    Refused on the loop's own thread: waiting there for a coroutine of that loop would block it until the timeout.
    """
    loop = asyncio.get_running_loop()

    def fresh() -> int:
        if _running_loop() is loop:
            raise RuntimeError("a fresh PipeWire remote was asked for on the event loop's own thread")
        handoff = _RemoteHandoff()
        future = asyncio.run_coroutine_threadsafe(handoff.fill(session.open_remote()), loop)
        try:
            future.result(PROBE_TIMEOUT_S * 2)
        except TimeoutError as exc:
            future.cancel()
            handoff.abandon()  # a remote already handed over is closed now, one still coming when it comes
            raise PipeWireError(f"the portal gave no PipeWire remote within {PROBE_TIMEOUT_S * 2:.0f}s") from exc
        return handoff.take()

    return fresh


def _choose_reader() -> NativeChoice:
    """The native reader when it is there and runs, else gst-launch; said once per session in the log."""
    choice = dataclasses.replace(native_reader(), cursor_metadata=wayland_cursor_metadata())
    if choice.binary:
        log.info("screen capture: PipeWire frames read by helpline-pwcast (%s): damage rectangles, %s", choice.reason,
                 "cursor metadata" if choice.cursor_metadata else "the pointer drawn in (wayland_cursor embedded)")
    else:
        log.info("screen capture: PipeWire frames read by gst-launch-1.0 pipewiresrc, whole frames with the pointer "
                 "drawn in: %s", choice.reason)
    return choice


def _reader_name(native: NativeChoice) -> str:
    return "helpline-pwcast" if native.binary else "gst-launch-1.0"


async def _reader_for(session: MutterSession | PortalSession, pipewire_fd: int | None = None,
                      fresh_remote: Callable[[], int] | None = None, native: NativeChoice | None = None,
                      cursor: StreamCursor | None = None) -> CastSet:
    """The reader of the session's monitors (monitor 1, the primary, shown first); the session is closed if it
    cannot start (nothing left half open).

    Through the portal the first reader uses the session's own PipeWire remote (``pipewire_fd``) and every
    later one a remote of its own (``fresh_remote``): a remote serves one client — a second gst-launch child on
    the first one's remote, after a monitor switch, got no frame in 10 s (seen in the two-monitor portal test).
    ``native``: read with helpline-pwcast (its cursor metadata into ``cursor``), else with gst-launch.
    """
    first = [pipewire_fd]

    def reader(s: StreamInfo) -> StreamReader:
        if first:
            fd, owned = first.pop(), False
        elif fresh_remote is None:
            fd, owned = None, False
        else:
            fd, owned = fresh_remote(), True
        if native is not None and native.binary is not None:
            return NativeCapture(s.node_id, s.x, s.y, s.w, s.h, binary=native.binary, cursor=cursor, pipewire_fd=fd,
                                 owns_remote=owned, pixels=native.pixels)
        return PipeWireCapture(s.node_id, s.x, s.y, s.w, s.h, pipewire_fd=fd, owns_remote=owned)

    try:
        return CastSet(session.monitors, reader)
    except BaseException:
        await session.close()
        raise


@dataclass
class MutterBackend(_StartedSession):
    """A started Mutter remote-desktop session and the reader of its stream."""

    session: MutterSession
    capture: CastSet
    #: Reported in the session's stats and logs.
    name: str = "wayland-mutter"
    #: Follows monitors plugged in, removed or resized (hotplug.py) until the session closes.
    follower: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    async def open(cls, bus_address: str | None = None) -> MutterBackend:
        """Start the session; with the native reader its streams carry the pointer as metadata, not in the frames."""
        native = _choose_reader()
        metadata = bool(native.binary) and native.cursor_metadata
        session = await MutterSession.open(
            bus_address, cursor_mode=mutter.CURSOR_METADATA if metadata else mutter.CURSOR_EMBEDDED)
        cursor = StreamCursor() if metadata else None
        backend = cls(session, await _reader_for(session, native=native, cursor=cursor))
        backend.cursor, backend.reader = cursor, _reader_name(native)
        backend.follower = asyncio.create_task(follow(session, backend.capture), name="wayland-hotplug")
        return backend

    async def close(self) -> None:
        if self.follower is not None:
            self.follower.cancel()
            await asyncio.gather(self.follower, return_exceptions=True)
        await super().close()


@dataclass
class PortalBackend(_StartedSession):
    """A started xdg-desktop-portal remote-desktop session and the reader of its stream."""

    session: PortalSession
    capture: CastSet
    name: str = "wayland-portal"

    @property
    def devices(self) -> int:
        """What the portal's ``Start`` granted: nothing when the person left remote interaction off."""
        return self.session.started.devices

    def input_notice(self) -> str:
        """On a ScreenCast-only portal (wlroots: no RemoteDesktop) the reason is the desktop's, not the person's."""
        if not self.session.remote_input:
            return (f"{portal.NO_REMOTE_INPUT} (xdg-desktop-portal has no RemoteDesktop portal here, as on wlroots "
                    "desktops such as sway): the screen is shared, the session is view-only")
        return super().input_notice()

    @classmethod
    async def open(cls, bus_address: str | None = None, tokens: RestoreTokenStore | None = None) -> PortalBackend:
        """Start the portal session presenting the stored restore token; store what the portal returns."""
        tokens = tokens or RestoreTokenStore()
        presented = tokens.load()
        native = _choose_reader()
        try:
            session = await PortalSession.open(bus_address, restore_token=presented, cursor_mode=(
                portal.CURSOR_METADATA if native.binary and native.cursor_metadata else portal.CURSOR_EMBEDDED))
        except PortalError:
            if presented:  # refused or cancelled with a token: it is spent either way (tokens are single use)
                tokens.drop()
            raise
        try:
            tokens.replace(session.started.restore_token)
        except OSError as exc:  # the session still works; the next one asks again
            log.warning("portal restore token not stored: %s", exc)
        cursor = StreamCursor() if native.binary and session.cursor_mode == portal.CURSOR_METADATA else None
        backend = cls(session, await _reader_for(session, session.pipewire_fd, _fresh_remotes(session), native, cursor))
        backend.cursor, backend.reader = cursor, _reader_name(native)
        return backend


def _screen_setting(env: Mapping[str, str], key: str, default: str, config: Path | None = None) -> str:
    """``[screen] key`` of the agent's config file (``HELPLINE_AGENT_CONFIG``, else /etc/helpline/agent.toml)."""
    path = config or Path(env.get("HELPLINE_AGENT_CONFIG") or DEFAULT_CONFIG)
    try:
        table = tomllib.loads(path.read_text()).get("screen", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        table = {}
    return str(table.get(key, default)).strip().lower() if isinstance(table, dict) else default


def wayland_cursor_metadata(env: Mapping[str, str] | None = None, config: Path | None = None) -> bool:
    """Whether the native reader records the streams with cursor metadata: ``HELPLINE_WAYLAND_CURSOR``, else
    ``[screen] wayland_cursor`` ("embedded", the default: the pointer drawn into the frames, or "metadata").

    Embedded by default: in metadata mode the headless Mutter 43.8 sometimes misses a window's first paint
    (README, *Cursor under Wayland*), and a viewer showing a stale screen is worse than a pointer in the pixels."""
    env = os.environ if env is None else env
    value = env.get("HELPLINE_WAYLAND_CURSOR", "").strip().lower() or _screen_setting(env, "wayland_cursor",
                                                                                     "embedded", config)
    if value not in ("metadata", "embedded"):
        log.warning("screen: wayland_cursor %r is not metadata or embedded; using embedded", value)
        return False
    return value == "metadata"


def wayland_preference(env: Mapping[str, str] | None = None, config: Path | None = None) -> Preference:
    """``HELPLINE_WAYLAND_BACKEND``, else ``[screen] wayland_backend`` of the agent's config file, else "auto"."""
    env = os.environ if env is None else env
    value = env.get("HELPLINE_WAYLAND_BACKEND", "").strip().lower()
    if not value:
        value = _screen_setting(env, "wayland_backend", "auto", config)
    if value not in ("auto", "mutter", "portal"):
        log.warning("screen: wayland_backend %r is not auto, mutter or portal; using auto", value)
        return "auto"
    return value  # type: ignore[return-value]


async def _ask_session_bus(bus_address: str | None, ask: Callable[[MessageBus], Awaitable[bool]]) -> bool:
    """``ask`` on a connection of its own to the session bus, each step within PROBE_TIMEOUT_S; False when no bus
    answers or the question fails (a probe never raises)."""
    try:
        bus = await asyncio.wait_for(MessageBus(bus_address=bus_address, bus_type=BusType.SESSION).connect(),
                                     PROBE_TIMEOUT_S)
    except Exception:
        return False
    try:
        return await asyncio.wait_for(ask(bus), PROBE_TIMEOUT_S)
    except Exception:
        return False
    finally:
        bus.disconnect()


async def mutter_available(bus_address: str | None = None) -> bool:
    """Whether Mutter's remote-desktop API is on the session bus (a GNOME session); False when no bus answers."""

    async def owned(bus: MessageBus) -> bool:
        reply = await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus", interface="org.freedesktop.DBus",
            member="NameHasOwner", signature="s", body=[RD_NAME]))
        return reply is not None and reply.message_type == MessageType.METHOD_RETURN and bool(reply.body[0])

    return await _ask_session_bus(bus_address, owned)


async def pick_wayland(bus_address: str | None = None, preference: Preference | None = None) -> WaylandPath:
    """Mutter's API or the portal, as configured; "auto": Mutter's when it is on the bus, else the portal."""
    preference = preference or wayland_preference()
    if preference != "auto":
        return preference
    return "mutter" if await mutter_available(bus_address) else "portal"


async def open_wayland(bus_address: str | None = None,
                       preference: Preference | None = None) -> MutterBackend | PortalBackend:
    """The chosen Wayland backend, started; :class:`WaylandUnavailable` with the reason when it cannot be."""
    path = await pick_wayland(bus_address, preference)
    name = f"wayland-{path}"
    log.info("screen session: Wayland through %s", "Mutter's remote-desktop API" if path == "mutter"
             else "the xdg-desktop-portal")
    try:
        if path == "mutter":
            return await MutterBackend.open(bus_address)
        return await PortalBackend.open(bus_address)
    except PortalCancelled as exc:
        raise WaylandUnavailable(f"{exc}; the session was not started", backend=name, code="portal_cancelled") from exc
    except (MutterError, PortalError, PipeWireError) as exc:
        raise WaylandUnavailable(f"Wayland screen sharing failed ({name}): {exc}", backend=name) from exc


async def portal_view_only(bus_address: str | None = None) -> bool:
    """Whether the session bus's portal offers a ScreenCast of monitors but no RemoteDesktop (a wlroots desktop):
    a portal session there is view-only. False when no portal answers (then a session fails with the reason)."""

    async def screencast_only(bus: MessageBus) -> bool:
        offer = await portal.portal_offer(bus)
        return offer.remote_desktop == 0 and offer.monitors

    return await _ask_session_bus(bus_address, screencast_only)


async def screen_capabilities(backend: list[str], env: Mapping[str, str] | None = None) -> list[str]:
    """The hello's screen capabilities: ``backend`` (``screen.backend:…``), and ``screen.view-only`` when it is the
    portal and that portal offers no remote input (protocol/screen_backend.py)."""
    from protocol.screen_backend import PREFIX, VIEW_ONLY

    env = os.environ if env is None else env
    if PREFIX + "wayland-portal" in backend and await portal_view_only(env.get("DBUS_SESSION_BUS_ADDRESS")):
        return [*backend, VIEW_ONLY]
    return backend


async def describe_backend(display: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The screen backend a session here would use: "x11", "wayland-mutter" or "wayland-portal" (capabilities)."""
    env = os.environ if env is None else env
    if choose_backend(env, display) == "x11":
        return "x11"
    preference = wayland_preference(env)
    return f"wayland-{await pick_wayland(env.get('DBUS_SESSION_BUS_ADDRESS'), preference)}"
