"""Start a throw-away headless KDE compositor (KWin 5.27) with xdg-desktop-portal-kde, for the portal path.

``start_kwin()`` builds the same kind of private world as tests/wayland.py's Mutter — a fresh
``XDG_RUNTIME_DIR``, a session ``dbus-daemon``, ``pipewire`` and ``wireplumber`` — then
``kwin_wayland --virtual`` (a virtual framebuffer, rendered with Mesa's software OpenGL), then
``xdg-desktop-portal-kde`` (RemoteDesktop + ScreenCast through KWin's own screencast protocol) and
``xdg-desktop-portal`` with ``XDG_CURRENT_DESKTOP=KDE``. No XWayland (a KDE test needs none).

Debian installs ``kwin_wayland`` with the file capability ``cap_sys_resource=ep``; where the bounding
set lacks CAP_SYS_RESOURCE (a container, as here) the kernel refuses to exec it ("Operation not
permitted"), so the fixture runs a copy without the capability from its runtime directory (KWin only
uses it to raise its own limits). ``stop()`` kills every process by PID; a missing binary is an error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wayland import (
    READY_TIMEOUT_S,
    MutterError,
    MutterHandle,
    _bus_has,
    _wait,
    child_spawner,
    start_bus_and_pipewire,
)

BINARIES = ("dbus-daemon", "pipewire", "wireplumber", "kwin_wayland", "gdbus", "foot")
PORTALS = ("/usr/libexec/xdg-desktop-portal", "/usr/lib/x86_64-linux-gnu/libexec/xdg-desktop-portal-kde")
SOCKET = "wayland-kde"


def start_kwin(width: int = 1920, height: int = 1080, log_dir: Path | None = None) -> MutterHandle:
    """Start the stack and wait until KWin's socket and both portals answer (the handle of tests/wayland.py,
    with ``display`` ""; ``pids`` name "dbus", "pipewire", "wireplumber", "kwin", "portal-kde", "portal")."""
    missing = [name for name in BINARIES if shutil.which(name) is None]
    missing += [path for path in PORTALS if not os.access(path, os.X_OK)]
    if missing:
        raise MutterError(f"not installed: {', '.join(missing)} (scripts/setup.sh installs them)")
    runtime = Path(tempfile.mkdtemp(prefix="helpline-kde-"))
    runtime.chmod(0o700)
    logs = log_dir or runtime
    bus = runtime / "bus"
    address = f"unix:path={bus}"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY")}
    env.update(XDG_RUNTIME_DIR=str(runtime), DBUS_SESSION_BUS_ADDRESS=address, HOME=str(runtime),
               XDG_CONFIG_HOME=str(runtime / "config"), XDG_STATE_HOME=str(runtime / "state"),
               XDG_CURRENT_DESKTOP="KDE", XDG_SESSION_TYPE="wayland", NO_AT_BRIDGE="1")
    handle = MutterHandle(runtime, address, "", "", "", width, height)
    procs = handle._procs
    kwin = runtime / "kwin_wayland"  # a copy without the file capability (see the module's docstring)
    shutil.copyfile(shutil.which("kwin_wayland") or "kwin_wayland", kwin)
    kwin.chmod(0o755)

    spawn = child_spawner(handle, logs, env)

    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        start_bus_and_pipewire(spawn, handle, deadline)
        spawn("kwin", [str(kwin), "--virtual", "--width", str(width), "--height", str(height), "--socket", SOCKET,
                       "--no-lockscreen"])
        _wait("KWin's Wayland socket", (runtime / SOCKET).exists, procs, deadline)
        handle.wayland_display = SOCKET
        env["WAYLAND_DISPLAY"] = SOCKET
        spawn("portal-kde", [PORTALS[1]], {"QT_QPA_PLATFORM": "wayland"})
        _wait("xdg-desktop-portal-kde", lambda: _bus_has(env, "org.freedesktop.impl.portal.desktop.kde", {}),
              procs, deadline)
        spawn("portal", [PORTALS[0], "--verbose"])
        _wait("xdg-desktop-portal", lambda: _bus_has(env, "org.freedesktop.portal.Desktop", {}), procs, deadline)
    except BaseException:
        handle.stop()
        raise
    return handle


@contextlib.contextmanager
def adopted_kwin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MutterHandle]:
    """A headless KWin + xdg-desktop-portal-kde whose session this process (the agent under test) adopts; the
    portal path is forced (``auto`` would pick it too: no Mutter on this bus). Stopped by PID on the way out."""
    handle = start_kwin(1920, 1080, log_dir=tmp_path)
    try:
        env = {**handle.env(), "XDG_CURRENT_DESKTOP": "KDE"}
        for key, value in env.items():
            if os.environ.get(key) != value:
                monkeypatch.setenv(key, value)
        monkeypatch.delenv("DISPLAY", raising=False)
        monkeypatch.delenv("XAUTHORITY", raising=False)
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
        monkeypatch.setenv("HELPLINE_WAYLAND_BACKEND", "portal")
        yield handle
    finally:
        handle.stop()
