"""Start a throw-away headless GNOME compositor (Mutter) for tests and benchmarks.

``start_mutter()`` gives the compositor a world of its own: a fresh ``XDG_RUNTIME_DIR``,
a session ``dbus-daemon`` on a socket in it, ``pipewire`` and ``wireplumber`` on that bus,
then ``mutter --headless --virtual-monitor WxH --wayland`` (which starts XWayland for X
clients such as the Tk consent prompt). Mutter runs a small shell as its child that writes
the environment it hands to clients (``WAYLAND_DISPLAY``, ``DISPLAY``, ``XAUTHORITY``) to
a file: that is how the fixture learns the XWayland display without guessing numbers.
Readiness is polled with a deadline: Mutter's RemoteDesktop and ScreenCast names owned on
the bus and the XWayland display answering ``xdpyinfo``. ``stop()`` kills every process
it started by PID, compositor first. A missing binary is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

READY_TIMEOUT_S = 30.0
BINARIES = ("dbus-daemon", "pipewire", "wireplumber", "mutter", "Xwayland", "gst-launch-1.0", "xdpyinfo",
            "gdbus")


class MutterError(RuntimeError):
    """The headless compositor could not be started."""


@dataclass
class MutterHandle:
    """A running headless Mutter and its private bus, PipeWire and XWayland."""

    runtime_dir: Path
    bus_address: str
    wayland_display: str
    display: str
    xauthority: str
    width: int
    height: int
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    #: PIDs of the stack's processes by name ("dbus", "pipewire", "wireplumber", "mutter"): whose CPU to measure.
    pids: dict[str, int] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """A copy of os.environ for a process in this Wayland session (as the user's session helper sees it)."""
        env = {**os.environ, "XDG_RUNTIME_DIR": str(self.runtime_dir), "DBUS_SESSION_BUS_ADDRESS": self.bus_address,
               "WAYLAND_DISPLAY": self.wayland_display, "DISPLAY": self.display, "XDG_SESSION_TYPE": "wayland"}
        # The pointer drawn into the frames unless a test asks for cursor metadata (tests/test_wayland_native.py):
        # on this bare headless Mutter 43.8 a metadata-mode stream sometimes records a cursor-only buffer right after
        # its first frame and then misses a window's first paint (3 runs in 14; README, Wayland, Cursor).
        env.setdefault("HELPLINE_WAYLAND_CURSOR", "embedded")
        if not self.display:  # started without XWayland (xwayland=False): no X display at all
            env.pop("DISPLAY")
            env.pop("XAUTHORITY", None)
        if self.xauthority:
            env["XAUTHORITY"] = self.xauthority
        return env

    def stop(self) -> None:
        """Kill every process this handle started, by PID, newest first; safe to call twice."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
        self._procs.clear()
        pidfile = self.runtime_dir / "child.pid"  # mutter's placeholder client (exec'd sleep): not our child
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
        # A portal's D-Bus-activated document portal mounts FUSE on $XDG_RUNTIME_DIR/doc and unmounts only once it
        # sees the bus gone: until then the directory cannot go (such runtime dirs were found left behind in /tmp).
        deadline = time.monotonic() + 10.0
        while True:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            if not self.runtime_dir.exists() or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # polling interval, not synchronization


def _missing() -> list[str]:
    return [name for name in BINARIES if shutil.which(name) is None]


def _wait(what: str, check: object, procs: list[subprocess.Popen[bytes]], deadline: float) -> None:
    assert callable(check)
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise MutterError(f"{proc.args!r} exited with {proc.returncode} while waiting for {what}")
        if check():
            return
        time.sleep(0.05)  # polling interval, not synchronization
    raise MutterError(f"{what} not ready within {READY_TIMEOUT_S}s")


def _bus_has(env: dict[str, str], name: str, ids: dict[str, Any]) -> bool:
    result = subprocess.run(
        ["gdbus", "call", "--session", "--dest", "org.freedesktop.DBus", "--object-path", "/org/freedesktop/DBus",
         "--method", "org.freedesktop.DBus.NameHasOwner", name],
        capture_output=True, text=True, env=env, timeout=10, check=False, **ids)
    return result.returncode == 0 and "true" in result.stdout



#: spawn(name, args, extra_env=None, **popen): a child of the test logging to NAME.log, recorded on the handle.
Spawn = Callable[..., subprocess.Popen[bytes]]


def child_spawner(handle: MutterHandle, logs: Path, env: dict[str, str]) -> Spawn:
    """How every desktop fixture (Mutter here, tests/sway.py, tests/kde.py) starts its children: output to
    ``logs/NAME.log``, ``env`` plus the call's extra variables, and the pid recorded so ``stop()`` kills it."""

    def spawn(name: str, args: list[str], extra: dict[str, str] | None = None,
              **popen: Any) -> subprocess.Popen[bytes]:
        out = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child, closed below
        try:
            proc = subprocess.Popen(args, env={**env, **(extra or {})}, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, **popen)
        finally:
            out.close()
        handle._procs.append(proc)
        handle.pids[name] = proc.pid
        return proc

    return spawn


def start_bus_and_pipewire(spawn: Spawn, handle: MutterHandle, deadline: float,
                           dbus_args: tuple[str, ...] = ("--session",)) -> None:
    """The session's own D-Bus daemon (at ``handle.bus_address``), PipeWire and WirePlumber, each waited for."""
    runtime = handle.runtime_dir
    spawn("dbus", ["dbus-daemon", *dbus_args, "--nofork", "--nopidfile", f"--address={handle.bus_address}"])
    _wait("the session bus", (runtime / "bus").exists, handle._procs, deadline)
    spawn("pipewire", ["pipewire"])
    _wait("pipewire", (runtime / "pipewire-0").exists, handle._procs, deadline)
    spawn("wireplumber", ["wireplumber"])

def start_mutter(width: int = 1920, height: int = 1080, log_dir: Path | None = None,
                 user: tuple[int, int] | None = None, mutter_env: dict[str, str] | None = None,
                 xwayland: bool = True, extra_monitors: tuple[tuple[int, int], ...] = ()) -> MutterHandle:
    """Start the whole stack and wait until Mutter's remote-desktop API and XWayland answer.

    ``user`` (uid, gid): run the stack as that user, as a real desktop runs as the person logged in
    (their session bus admits only them, so a session helper test needs it); default: this process's.
    ``mutter_env``: extra environment for the compositor alone (benchmarks/wayland_fps.py's variations).
    ``xwayland=False``: ``mutter --no-x11`` (Mutter 43's flag), a Wayland desktop with no X server at all
    (the handle's ``display`` is "" and its ``env()`` has no ``DISPLAY``): the native consent UI's world.
    ``extra_monitors``: more virtual monitors (w, h) after the first, which Mutter places left to right.
    """
    missing = _missing()
    if missing:
        raise MutterError(f"not installed: {', '.join(missing)} (scripts/setup.sh installs them)")
    runtime = Path(tempfile.mkdtemp(prefix="helpline-wl-"))
    runtime.chmod(0o700)
    ids: dict[str, Any] = {}
    if user is not None:
        os.chown(runtime, *user)
        ids = {"user": user[0], "group": user[1], "extra_groups": []}
    logs = log_dir or runtime
    bus = runtime / "bus"
    address = f"unix:path={bus}"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY")}
    env.update(XDG_RUNTIME_DIR=str(runtime), DBUS_SESSION_BUS_ADDRESS=address, GSETTINGS_BACKEND="memory",
               NO_AT_BRIDGE="1")
    if user is not None:
        env.update(HOME=pwd.getpwuid(user[0]).pw_dir, USER=pwd.getpwuid(user[0]).pw_name)
    handle = MutterHandle(runtime, address, "", "", "", width, height)
    procs = handle._procs

    base = child_spawner(handle, logs, env)

    def spawn(name: str, args: list[str], extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return base(name, args, extra, **ids)

    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        start_bus_and_pipewire(spawn, handle, deadline)
        envfile = runtime / "client.env"
        wl_name = "wayland-helpline"
        spawn("mutter", [
            "mutter", "--headless", "--virtual-monitor", f"{width}x{height}",
            *(arg for w, h in extra_monitors for arg in ("--virtual-monitor", f"{w}x{h}")), "--wayland",
            *([] if xwayland else ["--no-x11"]), f"--wayland-display={wl_name}", "--",
            "sh", "-c", f'echo $$ > "{runtime}/child.pid"; env > "{envfile}.tmp" && mv "{envfile}.tmp" "{envfile}"'
            ' && exec sleep infinity',
        ], mutter_env)
        _wait("mutter's client environment", envfile.exists, procs, deadline)
        client = dict(line.split("=", 1) for line in envfile.read_text().splitlines() if "=" in line)
        handle.wayland_display = client.get("WAYLAND_DISPLAY", wl_name)
        handle.display = client.get("DISPLAY", "")
        handle.xauthority = client.get("XAUTHORITY", "")
        if not xwayland:
            if handle.display:
                raise MutterError(f"mutter --no-x11 still offered an X display ({handle.display})")
            handle.xauthority = ""
        elif not handle.display:
            raise MutterError("mutter started no XWayland (no DISPLAY in its clients' environment)")
        for name in ("org.gnome.Mutter.RemoteDesktop", "org.gnome.Mutter.ScreenCast"):
            _wait(name, lambda n=name: _bus_has(env, n, ids), procs, deadline)  # type: ignore[misc]
        xenv = handle.env()
        if xwayland:
            _wait("XWayland", lambda: subprocess.run(["xdpyinfo", "-display", handle.display], env=xenv,
                                                      capture_output=True, timeout=10).returncode == 0,
                  procs, deadline)
    except BaseException:
        handle.stop()
        raise
    return handle


def foot_command(background: str) -> list[str]:
    """foot, the native Wayland client the tests type into and find on screen by its background colour; its shell
    is /bin/sh whatever the account's is (nobody's is nologin, and CI's environment names no $SHELL: foot would
    start, find no shell, and leave)."""
    return ["foot", "--override=shell=/bin/sh", f"--override=colors.background={background[1:]}"]


def xwayland_colour(display: str, colour: str) -> tuple[int, int] | None:
    """Screen position of a pixel of exactly ``colour`` (#rrggbb) in a top-level XWayland window, or None.

    XWayland is rootless: a grab of its root window shows nothing (tried with mss), but each
    window's own contents can be read (GetImage on the window), and its place on the screen is
    the Wayland output's coordinates. For finding a Tk prompt's button without a cast of our own.
    """
    from Xlib import X
    from Xlib.error import XError

    from agent.screen.xdisplay import open_display

    r, g, b = (int(colour[i: i + 2], 16) for i in (1, 3, 5))
    dpy = open_display(display)
    try:
        root = dpy.screen().root
        for window in root.query_tree().children:
            try:
                if window.get_attributes().map_state != X.IsViewable:
                    continue
                geometry = window.get_geometry()
                if geometry.width < 2 or geometry.height < 2:
                    continue
                image = window.get_image(0, 0, geometry.width, geometry.height, X.ZPixmap, 0xFFFFFFFF)
            except XError:
                continue  # gone or unreadable (an InputOnly window)
            pixels = np.frombuffer(image.data, np.uint8).reshape(geometry.height, -1, 4)[:, :geometry.width]
            ys, xs = np.nonzero((pixels[:, :, 2] == r) & (pixels[:, :, 1] == g) & (pixels[:, :, 0] == b))
            if len(xs):
                origin = window.translate_coords(root, 0, 0)  # the root's origin in the window: minus its place
                return int(xs.mean()) - origin.x, int(ys.mean()) - origin.y
        return None
    finally:
        dpy.close()


async def answer_xwayland_prompt(handle: MutterHandle, timeout: float = 30.0) -> None:
    """Click Allow on the agent's Tk consent prompt on the session's XWayland: found in the windows' own pixels
    (xwayland_colour), raised through the window manager, clicked with xdotool."""
    from agent.consent.tk_app import ALLOW_BG, PROMPT_TITLE
    from tests.harness import wait_until

    spot: tuple[int, int] | None = None

    def shown() -> bool:
        nonlocal spot
        spot = xwayland_colour(handle.display, ALLOW_BG)
        return spot is not None

    await wait_until(shown, timeout=timeout, what="the consent prompt on XWayland")
    assert spot is not None
    env = {**os.environ, "DISPLAY": handle.display, **({"XAUTHORITY": handle.xauthority} if handle.xauthority else {})}
    subprocess.run(["xdotool", "search", "--sync", "--name", PROMPT_TITLE, "windowactivate", "--sync"],
                   env=env, check=False, timeout=timeout, capture_output=True)
    subprocess.run(["xdotool", "mousemove", "--sync", str(spot[0]), str(spot[1]), "click", "1"], env=env,
                   check=True, timeout=timeout, capture_output=True)


PORTAL_BINARIES = ("/usr/libexec/xdg-desktop-portal", "/usr/libexec/xdg-desktop-portal-gnome")


def start_portal(handle: MutterHandle, log_dir: Path | None = None, screencast_only: bool = False) -> dict[str, str]:
    """Start xdg-desktop-portal with its GNOME backend on ``handle``'s bus; returns the clients' environment.

    ``screencast_only``: the portal is told (``XDG_DESKTOP_PORTAL_DIR``, a copy of gnome.portal without
    RemoteDesktop) that the backend implements ScreenCast alone, as xdg-desktop-portal-wlr does.

    Both run as explicit children of this process (killed by ``handle.stop()`` by PID, before the bus),
    not by D-Bus activation, so their logs are kept and nothing outlives the test. The GNOME backend
    draws its chooser as a native Wayland client of the headless Mutter and drives Mutter's API behind it.
    """
    missing = [path for path in PORTAL_BINARIES if not os.access(path, os.X_OK)]
    if missing:
        raise MutterError(f"not installed: {', '.join(missing)} (scripts/setup.sh installs xdg-desktop-portal-gnome)")
    env = {**handle.env(), "XDG_CURRENT_DESKTOP": "GNOME", "GSETTINGS_BACKEND": "memory", "NO_AT_BRIDGE": "1",
           "GTK_A11Y": "none"}
    if screencast_only:
        portals = handle.runtime_dir / "portals"
        portals.mkdir(exist_ok=True)
        spec = Path("/usr/share/xdg-desktop-portal/portals/gnome.portal").read_text()
        (portals / "gnome.portal").write_text(spec.replace("org.freedesktop.impl.portal.RemoteDesktop;", ""))
        env["XDG_DESKTOP_PORTAL_DIR"] = str(portals)
    # Anything the portal activates on this bus (the permission store) sees the session's display too.
    subprocess.run(["dbus-update-activation-environment", "WAYLAND_DISPLAY", "DISPLAY", "XDG_CURRENT_DESKTOP",
                    "XDG_SESSION_TYPE", "XDG_RUNTIME_DIR"], env=env, check=False, timeout=30, capture_output=True)
    logs = log_dir or handle.runtime_dir
    deadline = time.monotonic() + READY_TIMEOUT_S
    for path, name, bus_name in ((PORTAL_BINARIES[1], "portal-gnome", "org.freedesktop.impl.portal.desktop.gnome"),
                                 (PORTAL_BINARIES[0], "portal", "org.freedesktop.portal.Desktop")):
        out = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child, closed below
        try:
            proc = subprocess.Popen([path, "--verbose"] if name == "portal" else [path], env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()
        handle._procs.append(proc)
        handle.pids[name] = proc.pid
        _wait(bus_name, lambda n=bus_name: _bus_has(env, n, {}), [proc], deadline)  # type: ignore[misc]
    return env


@contextlib.contextmanager
def adopted_mutter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int, height: int, *,
                   extra_monitors: tuple[tuple[int, int], ...] = (), xwayland: bool = True,
                   portal: bool = False) -> Iterator[MutterHandle]:
    """A headless Mutter whose session this process (the agent under test) adopts through ``monkeypatch``;
    without XWayland no X display is left to it; with ``portal`` xdg-desktop-portal(-gnome) runs too and the
    portal path is forced. Stopped by PID on the way out."""
    handle = start_mutter(width, height, log_dir=tmp_path, xwayland=xwayland, extra_monitors=extra_monitors)
    try:
        if not xwayland:
            monkeypatch.delenv("DISPLAY", raising=False)
            monkeypatch.delenv("XAUTHORITY", raising=False)
        env = start_portal(handle, log_dir=tmp_path) if portal else handle.env()
        for key, value in env.items():
            if os.environ.get(key) != value:
                monkeypatch.setenv(key, value)
        if portal:
            monkeypatch.setenv("HELPLINE_WAYLAND_BACKEND", "portal")
            monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def mutter(tmp_path: Path) -> Iterator[MutterHandle]:
    """A 1920x1080 headless Mutter for this test (logs in the test's tmp_path)."""
    handle = start_mutter(1920, 1080, log_dir=tmp_path)
    try:
        yield handle
    finally:
        handle.stop()
