"""Where a key's latency goes on Wayland: timestamps on one clock (CLOCK_MONOTONIC) at each step.

On a headless Mutter (tests/wayland.py), a key goes in through a RemoteDesktop session
(``NotifyKeyboardKeysym``) to the Tk typing probe on XWayland, which prints when its handler ran;
the agent's reader pipeline (``agent/screen/wayland/frames.py``'s ``gst-launch-1.0`` command with
an ``identity silent=false`` after ``pipewiresrc``) prints when the changed buffer left
``pipewiresrc``; the reader thread here notes when the whole buffer arrived through the pipe.
So: key → client (input path), client → pipewiresrc (the compositor's redraw and cast),
pipewiresrc → agent (our reader). One cast only: a second cast costs Mutter a copy of its own.

    .venv/bin/python benchmarks/wayland_latency.py --keys 30
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from agent.screen.wayland.frames import PIPE_SIZE, gst_command  # noqa: E402
from agent.screen.wayland.mutter import MutterSession  # noqa: E402
from tests.wayland import start_mutter  # noqa: E402

#: The probe flips between two colours on each key and prints the handler's time.
PROBE = r"""
import sys, time, tkinter as tk
root = tk.Tk(); root.geometry("400x300+100+100")
c = tk.Canvas(root, width=400, height=300, highlightthickness=0, bg="#808080"); c.place(x=0, y=0)
p = c.create_rectangle(10, 10, 74, 74, fill="#12ab34", outline="")
n = [0]
def on_key(e):
    t = time.monotonic(); n[0] += 1
    c.itemconfigure(p, fill="#ab12cd" if n[0] % 2 else "#12ab34"); root.update_idletasks()
    print("key", t, flush=True)
root.bind("<KeyPress>", on_key)
root.after(100, lambda: (root.focus_force(), print("ready", flush=True)))
root.mainloop()
"""
GREEN = (0x12, 0xAB, 0x34)


def find(frame: np.ndarray, rgb: tuple[int, int, int]) -> tuple[int, int] | None:
    ys, xs = np.nonzero((frame[:, :, 2] == rgb[0]) & (frame[:, :, 1] == rgb[1]) & (frame[:, :, 0] == rgb[2]))
    return (int(xs.mean()), int(ys.mean())) if len(xs) else None


def instrumented(command: list[str]) -> list[str]:
    """The agent's gst command with ``identity silent=false`` right after pipewiresrc, and -v instead of -q."""
    cut = command.index("!")
    return ["gst-launch-1.0", "-v", *command[2:cut], "!", "identity", "silent=false", *command[cut:]]


async def run(keys: int) -> dict[str, list[float]]:
    handle = start_mutter(1920, 1080)
    marks: dict[str, list[float]] = {"client": [], "pipewiresrc": [], "agent": []}
    latest: list[np.ndarray | None] = [None]
    tk = subprocess.Popen([sys.executable, "-c", PROBE], env=handle.env(), stdout=subprocess.PIPE, text=True)
    gst: subprocess.Popen[str] | None = None
    session: MutterSession | None = None
    try:
        assert tk.stdout is not None
        tk.stdout.readline()
        session = await MutterSession.open(handle.bus_address)
        s = session.stream
        read_fd, write_fd = os.pipe()
        fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        gst = subprocess.Popen(instrumented(gst_command(s.node_id, s.w, s.h, write_fd)), pass_fds=(write_fd,),
                               env=handle.env(), stdout=subprocess.PIPE, text=True)
        os.close(write_fd)

        def client_lines() -> None:
            assert tk.stdout is not None
            for line in tk.stdout:
                if line.startswith("key"):
                    marks["client"].append(float(line.split()[1]))

        def gst_lines() -> None:
            assert gst is not None and gst.stdout is not None
            for line in gst.stdout:
                if "identity" in line and "chain" in line:
                    marks["pipewiresrc"].append(time.monotonic())

        def frames() -> None:
            size = s.w * s.h * 4
            with open(read_fd, "rb", buffering=0) as pipe:
                while True:
                    buf = bytearray(size)
                    view, got = memoryview(buf), 0
                    while got < size:
                        n = pipe.readinto(view[got:])
                        if not n:
                            return
                        got += n
                    marks["agent"].append(time.monotonic())
                    latest[0] = np.frombuffer(buf, np.uint8).reshape(s.h, s.w, 4)

        for target in (client_lines, gst_lines, frames):
            threading.Thread(target=target, daemon=True).start()
        deadline, box = time.monotonic() + 20, None
        while box is None and time.monotonic() < deadline:
            frame = latest[0]
            box = find(frame, GREEN) if frame is not None else None
            await asyncio.sleep(0.1)  # polling for the probe's first frame
        if box is None:
            raise RuntimeError("the Tk probe never showed on the cast")
        await session.pointer_motion(box[0] + 100, box[1] + 100)
        for down in (True, False):  # a click gives the probe the keyboard
            await session.pointer_button(0x110, down)
        await asyncio.sleep(1.0)  # the click's own redraws pass
        steps: dict[str, list[float]] = {k: [] for k in marks}
        for _ in range(keys):
            before = {k: len(v) for k, v in marks.items()}
            sent = time.monotonic()
            await session.tap_keysym(ord("a"))
            await asyncio.sleep(0.5)  # one key at a time: each step's first mark after the key is the key's
            for name, times in marks.items():
                if len(times) > before[name]:
                    steps[name].append(1000 * (times[before[name]] - sent))
        return steps
    finally:
        if gst is not None and gst.poll() is None:
            gst.send_signal(signal.SIGTERM)
            gst.wait(timeout=10)
        if session is not None:
            await session.close()
        tk.kill()
        tk.wait(timeout=10)
        handle.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=20)
    args = parser.parse_args()
    steps = asyncio.run(run(args.keys))
    load = os.getloadavg()[0]
    for name, values in steps.items():
        if values:
            print(f"key -> {name:12s} p50 {statistics.median(values):6.1f} ms  min {min(values):6.1f}  "
                  f"max {max(values):6.1f}  (n={len(values)}, load {load:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
