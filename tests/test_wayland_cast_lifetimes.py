"""What a Wayland screen reader leaves behind when it is closed or given up on: nothing (issue 14 review).

Two leaks the reviewer found, each shown with real parts:

- A monitor switch racing the session's close (:class:`CastSet`): the reader of the new monitor
  must neither keep a ``gst-launch`` child alive nor keep its own PipeWire remote open. Shown on a
  real headless Mutter with two monitors; every reader connects to the session's real PipeWire
  socket of its own, as a portal remote is a connection to PipeWire.
- A fresh PipeWire remote asked of the portal that answers too late (``_fresh_remotes``): the
  descriptor that comes after the caller gave up must be closed when it comes, and asking from the
  event loop's own thread is refused at once instead of blocking the loop. Shown over a real
  ``dbus-daemon`` with a stand-in for the portal's ``OpenPipeWireRemote`` that answers after a
  delay, passing a real socket as the portal does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from agent.screen.wayland import backend
from agent.screen.wayland.backend import _fresh_remotes
from agent.screen.wayland.casts import NO_NODE, CastSet
from agent.screen.wayland.frames import PipeWireCapture, PipeWireError
from agent.screen.wayland.mutter import MutterSession, StreamInfo
from agent.screen.wayland.portal import PORTAL_NAME, PORTAL_PATH, SC, PortalSession, _parse_start
from tests.logind_standin import private_bus
from tests.test_wayland_monitors import two_monitors  # noqa: F401 - the fixture
from tests.wayland import MutterHandle

TIMEOUT = 60.0
T = TypeVar("T")


def socket_inodes() -> set[int]:
    """The inodes of the sockets this process holds a descriptor of."""
    found: set[int] = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{name}")
            if target.startswith("socket:["):
                found.add(int(target[8:-1]))
    return found


def gst_children() -> list[int]:
    """PIDs of the gst-launch-1.0 children of this process still alive (not zombies)."""
    pids: list[int] = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            comm, rest = stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if comm.startswith("gst-launch") and int(rest[1]) == me and rest[0] != "Z":
                pids.append(int(entry))
    return pids


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        await asyncio.sleep(0.05)  # polling interval, not synchronization


class _Reader(PipeWireCapture):
    """A reader on a PipeWire remote of its own; ``before_close`` runs first when it is closed (a test's hook)."""

    before_close: Callable[[], None] | None = None

    def close(self) -> None:
        hook, self.before_close = self.before_close, None
        if hook is not None:
            hook()
        super().close()


async def test_a_switch_racing_close_leaves_no_child_and_no_remote(two_monitors: MutterHandle) -> None:  # noqa: F811
    """The session's close lands in a switch (after the new reader is in place, before the old one is closed): the
    new reader's gst-launch child is killed with the set. A switch asked after the close opens no child and closes
    the new readers' remotes (one each for a pasted "all monitors")."""
    pipewire = str(two_monitors.runtime_dir / "pipewire-0")
    remotes: list[int] = []  # the inodes of every remote handed to a reader
    readers: list[_Reader] = []

    def reader(s: StreamInfo) -> PipeWireCapture:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(pipewire)
        remotes.append(os.fstat(sock.fileno()).st_ino)
        readers.append(_Reader(s.node_id, s.x, s.y, s.w, s.h, pipewire_fd=sock.detach(), owns_remote=True))
        return readers[-1]

    session = await MutterSession.open()
    before = socket_inodes()
    try:
        casts = CastSet(session.monitors, reader)
        casts.start(lambda: None)
        first = await asyncio.to_thread(casts.grab, 1)
        assert first.shape == (720, 1280, 4) and gst_children(), "the first reader shows monitor 1 on its remote"

        closer = threading.Thread(target=casts.close)

        def close_meanwhile() -> None:  # the old reader's close is where the switch lets go of the set
            closer.start()
            closer.join(TIMEOUT)

        readers[0].before_close = close_meanwhile
        with contextlib.suppress(PipeWireError, RuntimeError):
            await asyncio.to_thread(casts.grab, 2)
        assert readers[0].before_close is None and not closer.is_alive()
        assert len(readers) == 2
        await wait_until(lambda: not gst_children(), 10.0, "every gst-launch child ended")

        with pytest.raises(RuntimeError, match="closed"):
            await asyncio.to_thread(casts.grab, 1)
        area = session.monitors[0]
        mosaic = CastSet([StreamInfo(NO_NODE, area.x, area.y, area.w, area.h), *session.monitors[1:]], reader)
        mosaic.close()
        with pytest.raises(RuntimeError, match="closed"):
            await asyncio.to_thread(mosaic.grab, 0)
        assert len(remotes) == 2 + 1 + 1 + 2  # two before the close, one for the switch after, mosaic: 1 + 2
        assert not gst_children()
        held = socket_inodes() - before
        assert not held & set(remotes), f"PipeWire remotes left open: {sorted(held & set(remotes))}"
    finally:
        for r in readers:
            r.close()
        await session.close()


# --- a fresh remote from a portal that answers late -----------------------------------------------------


class LatePortal:
    """A stand-in for the portal's ``OpenPipeWireRemote`` on a real bus: answers after ``delay`` with one end of a
    fresh socket pair (a new socket per call, as the portal's remotes are), then closes its own copies."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.delay = 0.0
        self.sent: list[int] = []  # inodes of the sockets sent (this process holds none of them after the send)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="late-portal", daemon=True)
        self.thread.start()
        self.bus = self.run(self._connect())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    async def _connect(self) -> MessageBus:
        bus = await MessageBus(bus_address=self.address, bus_type=BusType.SESSION, negotiate_unix_fd=True).connect()
        bus.add_message_handler(self._on_message)
        await bus.request_name(PORTAL_NAME)
        return bus

    def _on_message(self, message: Message) -> bool | None:
        if message.message_type != MessageType.METHOD_CALL or message.member != "OpenPipeWireRemote":
            return None
        self.loop.create_task(self._answer(message))
        return True

    async def _answer(self, call: Message) -> None:
        await asyncio.sleep(self.delay)
        ours, theirs = socket.socketpair()
        with ours, theirs:
            inode = os.fstat(theirs.fileno()).st_ino
            await self.bus.send(Message.new_method_return(call, "h", [0], unix_fds=[theirs.fileno()]))
        self.sent.append(inode)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.bus.disconnect()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def late_portal() -> Iterator[LatePortal]:
    """A private dbus-daemon with the stand-in portal on it (the daemon killed by PID after)."""
    with tempfile.TemporaryDirectory(prefix="helpline-late-portal-") as tmp, private_bus(Path(tmp)) as address:
        portal = LatePortal(address)  # the daemon printed its address: it accepts connections
        try:
            yield portal
        finally:
            portal.close()


async def portal_client(address: str) -> PortalSession:
    bus = await MessageBus(bus_address=address, bus_type=BusType.SESSION, negotiate_unix_fd=True).connect()
    started = _parse_start({"streams": Variant("a(ua{sv})", [
        (41, {"position": Variant("(ii)", (0, 0)), "size": Variant("(ii)", (1280, 720))}),
        (43, {"position": Variant("(ii)", (1280, 0)), "size": Variant("(ii)", (1024, 768))}),
    ]), "devices": Variant("u", 3)})
    return PortalSession(bus, f"{PORTAL_PATH}/session/1_1/test", started, -1)


def test_a_remote_that_comes_too_late_is_closed_and_the_loop_is_never_blocked(
        late_portal: LatePortal, monkeypatch: pytest.MonkeyPatch) -> None:
    """The capture thread gets a working remote in time; one that comes after it gave up is closed when it comes
    (not one descriptor per failed switch); asked on the event loop's own thread, it is refused at once."""
    assert SC == "org.freedesktop.portal.ScreenCast"
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="session-loop", daemon=True)
    thread.start()

    def on_loop(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(TIMEOUT)

    async def make_fresh(session: PortalSession) -> Callable[[], int]:
        return _fresh_remotes(session)

    session = on_loop(portal_client(late_portal.address))
    try:
        fresh = on_loop(make_fresh(session))
        fd = fresh()  # in time: the portal's socket, now ours
        try:  # the stand-in notes what it sent once its send returned: the reply may be here first
            on_loop(wait_until(lambda: len(late_portal.sent) == 1, TIMEOUT, "the remote noted as sent"))
            assert os.fstat(fd).st_ino == late_portal.sent[-1]
        finally:
            os.close(fd)

        monkeypatch.setattr(backend, "PROBE_TIMEOUT_S", 0.1)  # the capture thread waits 0.2 s
        late_portal.delay = 1.0
        before = socket_inodes()
        with pytest.raises(PipeWireError, match="no PipeWire remote"):
            fresh()
        on_loop(wait_until(lambda: len(late_portal.sent) == 2, TIMEOUT, "the late remote was sent"))
        late = late_portal.sent[-1]
        on_loop(wait_until(lambda: late not in socket_inodes(), 10.0, "the late remote was closed"))
        assert not (socket_inodes() - before) & set(late_portal.sent)

        async def from_the_loop() -> float:
            began = time.monotonic()
            with pytest.raises(RuntimeError, match="event loop"):
                fresh()
            return time.monotonic() - began

        assert on_loop(from_the_loop()) < 0.1 and len(late_portal.sent) == 2  # refused, nothing asked of the portal
    finally:
        on_loop(session.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
