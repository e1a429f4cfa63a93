"""gnome-remote-desktop as the Wayland benchmark's peer: its RDP server on the same headless Mutter.

Debian 12's gnome-remote-desktop 43.3 is built without VNC (no libvncserver; ``grdctl`` offers
only ``rdp``; the daemon accepts ``--vnc-port`` and reads the ``vnc`` settings, then starts only
its RDP server), so the peer is measured over **RDP**, the protocol GNOME ships. The daemon runs
on the test stack's session bus and runtime dir, with its settings in a private keyfile
(``GSETTINGS_BACKEND=keyfile`` in a temp ``XDG_CONFIG_HOME``), a throw-away self-signed TLS key,
and its credentials from the daemon's own test variables (``GNOME_REMOTE_DESKTOP_TEST_RDP_*``:
no Secret service on a private bus). It opens its Mutter RemoteDesktop session and cast when a
client connects and closes them when it leaves, so it never casts while Helpline does.

The viewer is FreeRDP's ``xfreerdp`` (Debian's freerdp2-x11) drawing on a private Xvfb, watched
by :class:`RdpViewer`, shaped like :class:`agent.viewer.Viewer` for screen.py's workloads: the
Xvfb is grabbed in a loop and every grab that differs from the last is one "update"; keys and
clicks go to xfreerdp through XTEST. So the peer's latency includes xfreerdp's decode and draw
plus this grab loop (a few ms per 1920x1080 grab), as Helpline's includes its viewer's decode.
Bytes are what xfreerdp's TCP connection received (``ss``'s tcp_info, sampled every 0.1 s).
Every process is stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from benchmarks.screen import HEIGHT, WIDTH, spawn
from helpline.ports import free_port
from tests.wayland import MutterHandle
from tests.xvfb import XvfbHandle, start_xvfb

DAEMON = "/usr/libexec/gnome-remote-desktop-daemon"
NAME = "gnome-remote-desktop"
#: KeyboardEvent.code → X keysym for the keys the benchmark presses.
KEYSYMS = {"KeyA": 0x61, "Space": 0x20, "Enter": 0xFF0D}


@dataclass
class GrdPeer:
    """A running gnome-remote-desktop RDP server and the Xvfb its viewer draws on."""

    port: int
    pid: int
    username: str
    password: str
    client_display: XvfbHandle
    workdir: Path


@contextlib.contextmanager
def start_grd(handle: MutterHandle, log_dir: Path | None = None) -> Iterator[GrdPeer]:
    """Start the daemon on ``handle``'s session and wait until its RDP port answers."""
    missing = [name for name in (DAEMON, "xfreerdp", "openssl", "gsettings") if shutil.which(name) is None]
    if missing:
        raise SystemExit(f"not installed: {', '.join(missing)} (scripts/setup.sh: gnome-remote-desktop, freerdp2-x11)")
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="helpline-grd-")))
        config = work / "config"
        config.mkdir(mode=0o700)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=grd",
                        "-keyout", str(config / "tls.key"), "-out", str(config / "tls.crt")],
                       check=True, capture_output=True, timeout=60)
        password = secrets.token_urlsafe(12)
        env = {**handle.env(), "GSETTINGS_BACKEND": "keyfile", "XDG_CONFIG_HOME": str(config),
               "XDG_DATA_HOME": str(config), "GNOME_REMOTE_DESKTOP_TEST_RDP_USERNAME": "helpline",
               "GNOME_REMOTE_DESKTOP_TEST_RDP_PASSWORD": password}
        for key, value in (("enable", "true"), ("view-only", "false"), ("tls-cert", str(config / "tls.crt")),
                           ("tls-key", str(config / "tls.key"))):
            subprocess.run(["gsettings", "set", "org.gnome.desktop.remote-desktop.rdp", key, value], env=env,
                           check=True, capture_output=True, timeout=30)
        port = free_port()
        log = open((log_dir or work) / "grd.log", "wb")  # noqa: SIM115 - handed to the child, closed below
        with log:
            proc = stack.enter_context(spawn([DAEMON, "--rdp-port", str(port)], env=env, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 30
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gnome-remote-desktop did not listen on {port} (see grd.log)")
            time.sleep(0.1)  # polling interval while the daemon starts
        xvfb = start_xvfb(WIDTH, HEIGHT)
        stack.callback(xvfb.stop)
        yield GrdPeer(port, proc.pid, "helpline", password, xvfb, work)


def _listening(port: int) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@dataclass
class RdpStats:
    updates: int = 0
    bytes_received: int = 0
    refreshes: int = 0  # RDP here has no separate lossless pass; kept for the shared workload code
    arrivals: list[tuple[float, int]] = field(default_factory=list)


class RdpViewer:
    """xfreerdp on the peer's Xvfb, seen through a grab loop; the workloads' viewer API."""

    def __init__(self, peer: GrdPeer) -> None:
        self.peer = peer
        self.stats = RdpStats()
        self.agent_stats = None  # the shared workload code reads Helpline's stats message here
        self.framebuffer: npt.NDArray[np.uint8] = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
        self.closed = asyncio.Event()
        self._changed = asyncio.Condition()
        self._notifying: set[asyncio.Future[None]] = set()
        self._stop = threading.Event()
        self._stack = contextlib.ExitStack()
        self._proc: subprocess.Popen[Any] | None = None
        self._dpy: Any = None

    async def __aenter__(self) -> RdpViewer:
        from Xlib import display

        home = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="helpline-rdp-")))
        env = {**self.peer.client_display.env(), "HOME": str(home)}
        # /cert:tofu: a fresh HOME trusts the throw-away key it meets first (this local daemon's).
        argv = ["xfreerdp", f"/v:127.0.0.1:{self.peer.port}", f"/u:{self.peer.username}", "/from-stdin:force",
                "/cert:tofu", f"/size:{WIDTH}x{HEIGHT}", "-decorations", "/gfx", "-grab-keyboard", "/log-level:ERROR"]
        self._proc = self._stack.enter_context(spawn(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL))
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{self.peer.password}\n".encode())  # not on the command line (ps shows argv)
        self._proc.stdin.close()
        self._dpy = display.Display(self.peer.client_display.display)
        loop = asyncio.get_running_loop()
        thread = threading.Thread(target=self._grab_loop, args=(loop,), daemon=True, name="rdp-grab")
        thread.start()
        self._stack.callback(thread.join, 5)
        self._stack.callback(self._stop.set)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stack.close()  # stops the grab loop, then xfreerdp (by PID)
        if self._dpy is not None:
            self._dpy.close()

    def _socket_bytes(self) -> int:
        """Bytes xfreerdp's TCP connection received so far (``ss``'s tcp_info of the client's socket)."""
        out = subprocess.run(["ss", "-tinH", "state", "established", "dst", f"127.0.0.1:{self.peer.port}"],
                             capture_output=True, text=True, timeout=10, check=False).stdout
        found = re.findall(r"bytes_received:(\d+)", out)
        return sum(int(n) for n in found) if found else self.stats.bytes_received

    def _grab_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        import mss

        with mss.MSS(display=self.peer.client_display.display) as sct:
            monitor = sct.monitors[1]
            last: npt.NDArray[np.uint8] | None = None
            got, counted = 0, 0.0
            while not self._stop.is_set():
                shot = sct.grab(monitor)
                frame = np.frombuffer(shot.raw, dtype=np.uint8).reshape(shot.height, shot.width, 4)
                now = time.monotonic()
                if now - counted >= 0.1:  # the byte count is sampled: ss is a process of its own
                    got, counted = self._socket_bytes(), now
                changed = last is None or not np.array_equal(frame[::4], last[::4])
                if changed and last is None and not frame[::8, ::8, :3].any():
                    changed = False  # the Xvfb's black before xfreerdp's first drawing is no update
                if changed:
                    last = frame
                loop.call_soon_threadsafe(self._publish, frame[:, :, :3] if changed else None, now, got)
                if self._proc is not None and self._proc.poll() is not None:
                    loop.call_soon_threadsafe(self.closed.set)
                    return
                time.sleep(0.002)  # leave the core a breath between 8 MB grabs

    def _publish(self, frame: npt.NDArray[np.uint8] | None, now: float, got: int) -> None:
        grew = got != self.stats.bytes_received
        self.stats.bytes_received = got
        if frame is not None:
            self.framebuffer = frame
            self.stats.updates += 1
            self.stats.arrivals.append((now, got))
        if frame is not None or grew:
            task = asyncio.ensure_future(self._notify())
            self._notifying.add(task)
            task.add_done_callback(self._notifying.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- input: XTEST into xfreerdp's window (it fills the Xvfb) ------------------------------

    def _fake(self, kind: int, detail: int, x: int = 0, y: int = 0) -> None:
        from Xlib.ext import xtest

        xtest.fake_input(self._dpy, kind, detail, x=x, y=y)
        self._dpy.sync()

    async def send_key(self, code: str, action: Literal["down", "up"]) -> None:
        from Xlib import X

        keycode = self._dpy.keysym_to_keycode(KEYSYMS[code])
        self._fake(X.KeyPress if action == "down" else X.KeyRelease, keycode)

    async def send_mouse(self, x: int, y: int, action: str = "move", button: int = 0) -> None:
        from Xlib import X

        self._fake(X.MotionNotify, 0, x, y)
        if action in ("down", "up"):
            self._fake(X.ButtonPress if action == "down" else X.ButtonRelease, button + 1)

    async def click(self, x: int, y: int, button: int = 0) -> None:
        await self.send_mouse(x, y, "move")
        await self.send_mouse(x, y, "down", button)
        await self.send_mouse(x, y, "up", button)

    # --- waiting (the reference viewer's API) --------------------------------------------

    async def wait_for(self, predicate: Callable[[RdpViewer], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self) or self.closed.is_set())
        if not predicate(self):
            raise ConnectionError("xfreerdp exited before the condition held")

    def region(self, x: int, y: int, w: int, h: int) -> npt.NDArray[np.uint8]:
        return self.framebuffer[y: y + h, x: x + w]


def grd_connect(peer: GrdPeer) -> Callable[[], contextlib.AbstractAsyncContextManager[RdpViewer]]:
    return lambda: RdpViewer(peer)
