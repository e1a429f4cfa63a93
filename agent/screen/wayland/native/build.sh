#!/usr/bin/env bash
# Build helpline-pwcast (the native PipeWire reader, agent/screen/wayland/native.py) into $1
# (default: the virtualenv's bin, where the agent looks for it). Needs gcc, pkg-config and
# libpipewire-0.3-dev; without them the agent reads frames with gst-launch-1.0 instead.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../../../.venv/bin/helpline-pwcast}"
flags="$(pkg-config --cflags --libs libpipewire-0.3)"
# shellcheck disable=SC2086  # pkg-config's flags are several words
gcc -O2 -Wall -Wextra -o "$out.tmp" "$here/helpline-pwcast.c" $flags
mv "$out.tmp" "$out"
