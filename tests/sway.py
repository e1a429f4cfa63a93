"""Start a throw-away headless wlroots desktop (sway) with xdg-desktop-portal-wlr, for the portal's view-only path.

``start_sway()`` builds the same kind of private world as tests/wayland.py's Mutter — a fresh
``XDG_RUNTIME_DIR``, a session ``dbus-daemon``, ``pipewire`` and ``wireplumber`` — then
``sway`` on wlroots' headless backend (``WLR_BACKENDS=headless``, the pixman software renderer,
one 1920x1080 output ``HEADLESS-1``, XWayland for the Tk consent prompt), then
``xdg-desktop-portal-wlr`` (ScreenCast only: wlroots has no RemoteDesktop portal) with
``chooser_type = none`` and ``output_name = HEADLESS-1`` so no chooser asks, and
``xdg-desktop-portal`` with ``XDG_CURRENT_DESKTOP=sway``.

sway refuses to run as root ("Unable to drop root"), so the desktop runs as ``nobody``, as a
desktop runs as its user; this (root) process — the agent under test — is let onto its bus and
X display, and ``xdg-desktop-portal`` runs as root like the agent (it reads its caller's /proc).
Readiness is polled with a deadline; ``stop()`` kills every process by PID. A missing binary is an
error, never a skip. The screen's own truth for comparisons is ``grim`` (wlr-screencopy), not a cast.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
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

BINARIES = ("dbus-daemon", "pipewire", "wireplumber", "sway", "Xwayland", "xdpyinfo", "xhost", "gdbus", "grim", "foot")
PORTALS = ("/usr/libexec/xdg-desktop-portal", "/usr/libexec/xdg-desktop-portal-wlr")
#: The desktop's user: sway will not run as root.
NOBODY = 65534
OUTPUT = "HEADLESS-1"
#: The desktop's background (sway's ``output … bg``): a screen that is not black, so a blank cast is caught.
BACKGROUND = "#204060"


def start_sway(width: int = 1920, height: int = 1080, log_dir: Path | None = None) -> MutterHandle:
    """Start the stack as ``nobody`` and wait until the portal, XWayland and the Wayland socket answer.

    The handle is tests/wayland.py's (the same fields and ``env()``/``stop()``); its ``pids`` name
    "dbus", "pipewire", "wireplumber", "sway", "portal-wlr" and "portal".
    """
    missing = [name for name in BINARIES if shutil.which(name) is None]
    missing += [path for path in PORTALS if not os.access(path, os.X_OK)]
    if missing:
        raise MutterError(f"not installed: {', '.join(missing)} (scripts/setup.sh installs them)")
    runtime = Path(tempfile.mkdtemp(prefix="helpline-sway-"))
    runtime.chmod(0o700)
    os.chown(runtime, NOBODY, NOBODY)
    ids: dict[str, Any] = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    logs = log_dir or runtime
    bus = runtime / "bus"
    address = f"unix:path={bus}"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY")}
    env.update(XDG_RUNTIME_DIR=str(runtime), DBUS_SESSION_BUS_ADDRESS=address, HOME=str(runtime), USER="nobody",
               XDG_CONFIG_HOME=str(runtime / "config"), XDG_STATE_HOME=str(runtime / "state"),
               XDG_CURRENT_DESKTOP="sway", XDG_SESSION_TYPE="wayland", NO_AT_BRIDGE="1")
    handle = MutterHandle(runtime, address, "", "", "", width, height)
    procs = handle._procs
    envfile = runtime / "client.env"
    config = runtime / "sway.conf"
    config.write_text(
        f"output {OUTPUT} resolution {width}x{height} position 0 0 bg {BACKGROUND} solid_color\n"
        "xwayland enable\n"
        "default_border none\n"
        f"exec sh -c 'env > \"{envfile}.tmp\" && mv \"{envfile}.tmp\" \"{envfile}\"'\n")
    xdpw_config = runtime / "xdpw.conf"
    xdpw_config.write_text(f"[screencast]\nchooser_type = none\noutput_name = {OUTPUT}\nmax_fps = 30\n")
    # The session bus admits its owner only; this (root) process is the agent under test, so it is let in too.
    bus_config = runtime / "bus.conf"
    bus_config.write_text('<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
                          ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
                          "<busconfig><include>/usr/share/dbus-1/session.conf</include>"
                          f'<policy context="default"><allow user="{pwd.getpwuid(os.getuid()).pw_name}"/></policy>'
                          "</busconfig>\n")
    for path in (config, xdpw_config, bus_config):
        os.chown(path, NOBODY, NOBODY)

    base = child_spawner(handle, logs, env)

    def spawn(name: str, args: list[str], extra: dict[str, str] | None = None,
              as_user: bool = True) -> subprocess.Popen[bytes]:
        return base(name, args, extra, **(ids if as_user else {}))

    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        start_bus_and_pipewire(spawn, handle, deadline, dbus_args=(f"--config-file={bus_config}",))
        spawn("sway", ["sway", "-c", str(config)], {
            "WLR_BACKENDS": "headless", "WLR_LIBINPUT_NO_DEVICES": "1", "WLR_RENDERER": "pixman",
            "WLR_HEADLESS_OUTPUTS": "1"})
        _wait("sway's client environment", envfile.exists, procs, deadline)
        client = dict(line.split("=", 1) for line in envfile.read_text().splitlines() if "=" in line)
        handle.wayland_display = client.get("WAYLAND_DISPLAY", "")
        handle.display = client.get("DISPLAY", "")
        if not handle.wayland_display or not handle.display:
            raise MutterError(f"sway gave its clients no WAYLAND_DISPLAY or DISPLAY: {sorted(client)}")
        env.update(WAYLAND_DISPLAY=handle.wayland_display, DISPLAY=handle.display)
        spawn("portal-wlr", [PORTALS[1], "-l", "INFO", "-c", str(xdpw_config)])
        _wait("xdg-desktop-portal-wlr", lambda: _bus_has(env, "org.freedesktop.impl.portal.desktop.wlr", ids),
              procs, deadline)
        # The frontend runs as this process's user, as it does as the agent's in a person's session: it reads its
        # callers' /proc/PID/root (the app id), which another uid may not.
        spawn("portal", [PORTALS[0], "--verbose"], as_user=False)
        _wait("xdg-desktop-portal", lambda: _bus_has(env, "org.freedesktop.portal.Desktop", ids), procs, deadline)
        # XWayland admits its own user only (si:localuser): the desktop's user lets this process's in, as
        # ``xhost`` in a person's session would; the first connection also starts the lazy XWayland.
        me = pwd.getpwuid(os.getuid()).pw_name
        _wait("XWayland", lambda: subprocess.run(["xhost", f"+si:localuser:{me}"], env=env, capture_output=True,
                                                  timeout=10, **ids).returncode == 0, procs, deadline)
        xenv = handle.env()
        _wait("XWayland for this process", lambda: subprocess.run(
            ["xdpyinfo", "-display", handle.display], env=xenv, capture_output=True, timeout=10).returncode == 0,
            procs, deadline)
    except BaseException:
        handle.stop()
        raise
    return handle


def sway_env(handle: MutterHandle) -> dict[str, str]:
    """The session's environment for a client of this desktop (the agent under test adopts it)."""
    return {**handle.env(), "XDG_CURRENT_DESKTOP": "sway"}


def screenshot(handle: MutterHandle) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The output as it is now (grim, wlr-screencopy), as an (h, w, 3) BGR array like the viewer's framebuffer."""
    out = subprocess.run(["grim", "-t", "ppm", "-o", OUTPUT, "-"], env=sway_env(handle), capture_output=True,
                         check=True, timeout=30).stdout
    parts = out.split(b"\n", 3)  # P6, "w h", 255, pixels (grim writes no comments)
    if parts[0] != b"P6" or parts[2] != b"255":
        raise AssertionError(f"grim wrote no binary PPM: {out[:40]!r}")
    w, h = (int(v) for v in parts[1].split())
    rgb = np.frombuffer(parts[3], np.uint8)[: w * h * 3].reshape(h, w, 3)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def spawn_client(handle: MutterHandle, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A native Wayland client of the desktop, as its user, its output in ``log`` (the caller stops it by PID)."""
    env = {**sway_env(handle), "HOME": str(handle.runtime_dir), "XDG_CONFIG_HOME": str(handle.runtime_dir / "config")}
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                user=NOBODY, group=NOBODY, extra_groups=[])


@contextlib.contextmanager
def adopted_sway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MutterHandle]:
    """A headless sway + xdg-desktop-portal-wlr whose session this process (the agent under test) adopts;
    stopped by PID on the way out."""
    handle = start_sway(1920, 1080, log_dir=tmp_path)
    try:
        for key, value in sway_env(handle).items():
            if os.environ.get(key) != value:
                monkeypatch.setenv(key, value)
        monkeypatch.delenv("XAUTHORITY", raising=False)
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
        monkeypatch.delenv("HELPLINE_WAYLAND_BACKEND", raising=False)  # auto: no Mutter on this bus → the portal
        monkeypatch.setenv("HELPLINE_AGENT_CONFIG", str(tmp_path / "no-agent.toml"))
        yield handle
    finally:
        handle.stop()
