#!/usr/bin/env bash
# Set up a development/test environment from a fresh clone: system packages (when root),
# a virtualenv in .venv with Helpline and its test tools, and the console's vendored JS.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# dbus: the private bus of the logind stand-in (tests/logind_standin.py); python3-tk: Tk for the
# session helpers the tests run as other users with the system's python3 (root's interpreter is not theirs to run).
# x11-xserver-utils: xrandr (two RandR monitors in tests/test_screen_session.py); x11vnc: the peer of
# benchmarks/screen.py --peer x11vnc.
SYSTEM_PACKAGES=(xvfb xdotool x11-utils x11-xserver-utils chromium ffmpeg postgresql tk dbus python3-tk x11vnc)
# systemd-analyze checks the package's unit files, and a systemd user manager in a mount namespace carries the
# live services test (tests/test_tools_systemd_live.py); ip netns carries the Wake-on-LAN test (tests/test_wake.py).
SYSTEM_PACKAGES+=(systemd iproute2)
# lspci names PCI controllers and smartctl gives drives' SMART health in the inventory (tests/test_collectors_depth.py).
SYSTEM_PACKAGES+=(pciutils smartmontools)
# Wayland (issue 14): a headless GNOME compositor with XWayland, PipeWire and GStreamer's pipewiresrc for the
# Mutter capture backend (agent/screen/wayland, tests/wayland.py); foot is the native Wayland typing probe.
SYSTEM_PACKAGES+=(mutter pipewire wireplumber gstreamer1.0-pipewire gstreamer1.0-tools gstreamer1.0-plugins-base
                  xwayland foot)
# The native PipeWire reader (agent/screen/wayland/native/helpline-pwcast.c: damage and cursor metadata), built below.
SYSTEM_PACKAGES+=(libpipewire-0.3-dev pkg-config gcc)
# python3-dev: Python's headers for the package's C part (agent/screen/_cut.c, built by pip install; optional there).
SYSTEM_PACKAGES+=(python3-dev)
# zenity: the native consent prompt and indicator on a Wayland desktop without XWayland (agent/consent/zenity.py).
SYSTEM_PACKAGES+=(zenity)
# wl-clipboard: the native Wayland apps that copy and paste in tests/test_wayland_toolkit.py (the clipboard a
# technician shares through the Tk indicator on XWayland reaches them through Mutter).
SYSTEM_PACKAGES+=(wl-clipboard)
# The xdg-desktop-portal path (agent/screen/wayland/portal.py) on the same headless GNOME: the portal and its GNOME
# backend, whose chooser tests/test_wayland_portal.py clicks; without recommends (they would pull in GNOME Shell).
# gnome-remote-desktop (its RDP server: Debian builds it without VNC) and xfreerdp are the peer of
# benchmarks/screen.py --backend wayland --peer gnome-remote-desktop.
NO_RECOMMENDS_PACKAGES=(xdg-desktop-portal xdg-desktop-portal-gnome gnome-remote-desktop freerdp2-x11)
# The portal's ScreenCast-only (view-only) path on a wlroots desktop (tests/sway.py): a headless sway with
# xdg-desktop-portal-wlr (ScreenCast only); xhost lets the test's process onto sway's XWayland, grim is its screenshot.
NO_RECOMMENDS_PACKAGES+=(sway xdg-desktop-portal-wlr grim x11-xserver-utils)
# The portal path on a headless KDE compositor (tests/kde.py): KWin, KDE's portal backend and its Qt Wayland plugin.
NO_RECOMMENDS_PACKAGES+=(kwin-wayland xdg-desktop-portal-kde qtwayland5)
# More than one node (issue 20): nats-server carries presence, routing and fan-out between server nodes in tests
# and the demo (server/bus), and JetStream's object store holds shared artifacts and recordings.
SYSTEM_PACKAGES+=(nats-server)
# Node.js/npm only vendor the console's chart library; take Debian's when none is on PATH.
command -v npm >/dev/null || SYSTEM_PACKAGES+=(nodejs npm)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  missing=()
  for pkg in "${NO_RECOMMENDS_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing system packages without recommends: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "==> not root: skipping system packages (${SYSTEM_PACKAGES[*]}); install them yourself for the full test suite"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating virtualenv .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.helpline-installed
# The package's C part (agent/screen/_cut.c) is compiled by this install: a changed source reinstalls too.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ agent/screen/_cut.c -nt "$stamp" ]; then
  echo "==> installing Helpline (agent and server extras) and test tools into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  # [test] = helpline[agent,server] + the test tools (a device needs only [agent], a server [server]).
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi

# helpline-pwcast into .venv/bin, rebuilt when its source changed; without libpipewire the agent uses gst-launch.
pwcast=agent/screen/wayland/native/helpline-pwcast.c
if [ ! -x .venv/bin/helpline-pwcast ] || [ "$pwcast" -nt .venv/bin/helpline-pwcast ]; then
  if pkg-config --exists libpipewire-0.3 2>/dev/null; then
    echo "==> building helpline-pwcast (native PipeWire reader)"
    agent/screen/wayland/native/build.sh .venv/bin/helpline-pwcast ||
      echo "==> helpline-pwcast did not build (see above): Wayland frames go through gst-launch-1.0"
  else
    echo "==> libpipewire-0.3-dev missing: helpline-pwcast not built (Wayland frames go through gst-launch-1.0)"
  fi
fi

if [ -x scripts/vendor-console.sh ]; then
  scripts/vendor-console.sh
fi
