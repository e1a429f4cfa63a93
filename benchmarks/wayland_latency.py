"""Where a key's latency goes on Wayland, step by step, for a bare PipeWire consumer and the agent in one run.

On a headless Mutter (tests/wayland.py) a key goes in through a RemoteDesktop session
(``NotifyKeyboardKeysym``, as the agent's injector sends it) to a typing probe, and every
step after it is timestamped on one clock (CLOCK_MONOTONIC):

- ``foot`` (a native Wayland terminal, the default probe), traced with ``WAYLAND_DEBUG=client``:
  ``event``  Mutter's own timestamp on the ``wl_keyboard.key`` event (ms, Mutter's monotonic clock),
  ``client`` foot received the key, ``commit`` foot committed the buffer showing it,
  ``composited`` the ``done`` of that commit's frame callback (Mutter's timestamp: it painted
  the frame holding the commit).
- ``tk`` (the Tk probe on XWayland): ``client`` is the key handler's time; XWayland's commit is
  not visible from here.
- Then the cast: ``pipewiresrc`` — the changed buffer left ``pipewiresrc`` (``-v`` with a
  ``fakesink silent=false`` for the bare consumer, an ``identity silent=false`` in the agent's
  own ``gst-launch`` command), and for the agent ``reader`` — the whole buffer arrived in
  :class:`~agent.screen.wayland.frames.PipeWireCapture` (the agent's code, its notify callback).

The bare consumer and the agent are measured in the **same run** on the same stack, taking
turns (no cast, bare, agent, no cast, bare, agent …), never both at once: every open cast costs
Mutter a copy of its own and the cast opened second gets buffers first, so two at once would
bias either side. The "no cast" turn (a session whose stream nobody reads) gives the
compositor's own latency and CPU per key; the difference is what casting costs.

Variations (``--size 960x540``, ``--size 1920x1080@30``, ``--compositor-env LP_NUM_THREADS=1``,
``--cursor-mode 2``, ``--pipewiresrc always-copy=false``) each run on a fresh stack.

    .venv/bin/python benchmarks/wayland_latency.py --keys 20
    flock /tmp/helpline-bench.lock .venv/bin/python benchmarks/wayland_latency.py --client tk
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from agent.screen.wayland import frames, mutter  # noqa: E402
from agent.screen.wayland.frames import PipeWireCapture  # noqa: E402
from agent.screen.wayland.mutter import MutterSession  # noqa: E402
from tests.wayland import MutterHandle, start_mutter  # noqa: E402

#: The Tk probe on XWayland flips a square on each key and prints the handler's time.
TK_PROBE = r"""
import sys, time, tkinter as tk
root = tk.Tk(); root.geometry("400x300+100+100")
c = tk.Canvas(root, width=400, height=300, highlightthickness=0, bg="#808080"); c.place(x=0, y=0)
p = c.create_rectangle(10, 10, 74, 74, fill="#12ab34", outline="")
n = [0]
def on_key(e):
    t = time.monotonic(); n[0] += 1
    c.itemconfigure(p, fill="#ab12cd" if n[0] % 2 else "#12ab34"); root.update_idletasks()
    print("client", t, flush=True)
root.bind("<KeyPress>", on_key)
root.after(100, lambda: (root.focus_force(), print("ready", flush=True)))
root.mainloop()
"""
#: Steps in the order a key passes them; each is "the first mark of that step after the key was sent".
STEPS = ("event", "client", "commit", "composited", "pipewiresrc", "reader")
#: A WAYLAND_DEBUG line: "[ 832576.500] wl_keyboard@19.key(2, 57772880, 30, 1)" (CLOCK_REALTIME µs mod 2^32).
DEBUG_LINE = re.compile(r"^\[\s*(\d+)\.(\d{3})\]\s+(->\s+)?(\w+)@(\d+)\.(\w+)\((.*)\)\s*$")
KEY_A = 0x61
#: Who reads the cast, in turns: nobody (the compositor alone), a bare pipewiresrc, the agent's reader.
CONSUMERS = ("none", "bare", "agent")
FOOT_BG = (0x2A, 0x1B, 0x3C)
TK_GREEN = (0x12, 0xAB, 0x34)


class Cost:
    """CPU seconds spent by one consumer's processes and threads while keys were typed, and its buffers."""

    def __init__(self) -> None:
        self.child_s = 0.0
        self.reader_s = 0.0
        self.buffers = 0
        self.compositor_s = 0.0
        self.keys = 0

    def per_buffer(self) -> tuple[float, float]:
        """(child, reader) CPU ms per buffer received."""
        n = max(self.buffers, 1)
        return 1000 * self.child_s / n, 1000 * self.reader_s / n


def process_cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def thread_cpu(native_id: int | None) -> float:
    for t in psutil.Process().threads():
        if t.id == native_id:
            return float(t.user_time + t.system_time)
    return 0.0


class Marks:
    """Timestamps (monotonic seconds) per step, appended by reader threads."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {step: [] for step in STEPS}
        self.lock = threading.Lock()

    def add(self, step: str, t: float) -> None:
        with self.lock:
            self.times[step].append(t)

    def first_after(self, step: str, t: float) -> float | None:
        with self.lock:
            return next((m for m in self.times[step] if m > t), None)


def debug_time(field_ms: int, field_us: int) -> float:
    """A WAYLAND_DEBUG timestamp (CLOCK_REALTIME in µs, cut to 32 bits) as CLOCK_MONOTONIC seconds."""
    now_real, now_mono = time.time(), time.monotonic()
    now_us = int(now_real * 1e6)
    stamp = field_ms * 1000 + field_us
    back = (now_us - stamp) % (1 << 32)  # how long ago, µs (the line is read within seconds of being written)
    return now_mono - back / 1e6


def trace_foot(stream: object, marks: Marks) -> None:
    """Parse foot's WAYLAND_DEBUG trace: key events, commits of its main surface, that surface's frame callbacks."""
    main_surface: str | None = None
    callbacks: set[str] = set()
    for line in stream:  # type: ignore[attr-defined]
        m = DEBUG_LINE.match(line.strip())
        if m is None:
            continue
        ms, us, request, iface, obj, member, args = m.groups()
        if request and iface == "wl_compositor" and member == "create_surface" and main_surface is None:
            main_surface = args.split("@")[-1]
        elif not request and iface == "wl_keyboard" and member == "key":
            parts = [a.strip() for a in args.split(",")]
            if parts[-1] == "1":  # pressed
                marks.add("client", debug_time(int(ms), int(us)))
                marks.add("event", int(parts[1]) / 1000)
        elif request and iface == "wl_surface" and obj == main_surface:
            if member == "commit":
                marks.add("commit", debug_time(int(ms), int(us)))
            elif member == "frame":
                callbacks.add(args.split("@")[-1])
        elif not request and iface == "wl_callback" and member == "done" and obj in callbacks:
            callbacks.discard(obj)
            marks.add("composited", int(args) / 1000)


@contextlib.contextmanager
def probe(kind: str, handle: MutterHandle, marks: Marks) -> Iterator[subprocess.Popen[str]]:
    """The typing probe (foot or Tk), its trace read into ``marks`` by a thread."""
    if kind == "foot":
        argv = ["foot", "--override=shell=/bin/sh", "--override=colors.background=2a1b3c"]
        proc = subprocess.Popen(argv, env={**handle.env(), "WAYLAND_DEBUG": "client", "PS1": "$ "},
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=trace_foot, args=(proc.stderr, marks), daemon=True).start()
    else:
        proc = subprocess.Popen([sys.executable, "-c", TK_PROBE], env=handle.env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the Tk probe did not start")

        def tk_lines() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("client"):
                    marks.add("client", float(line.split()[1]))
        threading.Thread(target=tk_lines, daemon=True).start()
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def pipewiresrc_props(extra: list[str]) -> list[str]:
    """The agent's pipewiresrc properties (frames.gst_command's, but the node) with ``extra`` replacing or adding."""
    command = frames.gst_command(0, 1, 1, 1)
    own = [c for c in command[3:command.index("!")] if not c.startswith("path=")]
    names = {e.split("=", 1)[0] for e in extra}
    return [p for p in own if p.split("=", 1)[0] not in names] + extra


def line_reader(stream: object, marks: Marks, needle: str) -> None:
    for line in stream:  # type: ignore[attr-defined]
        if needle in line and "chain" in line:
            marks.add("pipewiresrc", time.monotonic())


def fifo_reader(fifo: Path, marks: Marks) -> None:
    """The instrumented child's ``-v`` lines (opening blocks until the child opened its end)."""
    with open(fifo, encoding="utf-8", errors="replace") as out:
        line_reader(out, marks, "identity")


@contextlib.asynccontextmanager
async def bare_cast(handle: MutterHandle, marks: Marks, props: list[str]
                    ) -> AsyncIterator[tuple[MutterSession, Callable[[], tuple[float, float]]]]:
    """``gst-launch-1.0 -v pipewiresrc ! video/x-raw,format=BGRx ! fakesink silent=false``: touches no pixel."""
    session = await MutterSession.open(handle.bus_address)
    argv = ["gst-launch-1.0", "-v", "pipewiresrc", f"path={session.stream.node_id}", *props, "!",
            "video/x-raw,format=BGRx", "!", "fakesink", "silent=false", "sync=false"]
    proc = subprocess.Popen(argv, env=handle.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    threading.Thread(target=line_reader, args=(proc.stdout, marks, "fakesink"), daemon=True).start()
    try:
        yield session, lambda: (process_cpu(proc.pid), 0.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        await session.close()


@contextlib.asynccontextmanager
async def agent_cast(handle: MutterHandle, marks: Marks, props: list[str], fifo: Path
                     ) -> AsyncIterator[tuple[MutterSession, Callable[[], tuple[float, float]]]]:
    """The agent's reader (PipeWireCapture, its own gst command) with ``identity silent=false`` after pipewiresrc."""
    session = await MutterSession.open(handle.bus_address)
    s = session.stream
    original = frames.gst_command

    def instrumented(node_id: int, w: int, h: int, fd: int, pipewire_fd: int | None = None) -> list[str]:
        command = original(node_id, w, h, fd, pipewire_fd)
        cut = command.index("!")
        head = [c for c in command[2:cut] if c == "pipewiresrc" or c.startswith(("path=", "fd="))] + props
        gst = ["gst-launch-1.0", "-v", *head, "!", "identity", "silent=false", *command[cut:]]
        return ["sh", "-c", f'exec "$@" > "{fifo}"', "sh", *gst]  # -v output into our FIFO (stdout is /dev/null)

    frames.gst_command = instrumented  # type: ignore[assignment]
    capture = PipeWireCapture(s.node_id, s.x, s.y, s.w, s.h, env=handle.env())
    try:
        threading.Thread(target=fifo_reader, args=(fifo, marks), daemon=True).start()
        def arrived() -> None:  # a changed buffer is whole in the reader (take(): every one notifies)
            marks.add("reader", time.monotonic())
            capture.take()

        capture.start(arrived)
        proc, thread = capture._proc, capture._thread  # benchmark only: whose CPU to read
        assert proc is not None and thread is not None
        yield session, lambda: (process_cpu(proc.pid), thread_cpu(thread.native_id))
    finally:
        frames.gst_command = original  # type: ignore[assignment]
        await asyncio.to_thread(capture.close)
        await session.close()


@contextlib.asynccontextmanager
async def no_cast(handle: MutterHandle) -> AsyncIterator[tuple[MutterSession, Callable[[], tuple[float, float]]]]:
    """A RemoteDesktop session whose stream nobody reads: Mutter records no frame (the compositor's own cost)."""
    session = await MutterSession.open(handle.bus_address)
    try:
        yield session, lambda: (0.0, 0.0)
    finally:
        await session.close()


async def type_keys(session: MutterSession, marks: Marks, keys: int, steps: dict[str, list[float]],
                    gap: float) -> None:
    """``keys`` taps, one at a time; each step's latency is its first mark after the key was sent."""
    for _ in range(keys):
        sent = time.monotonic()
        await session.tap_keysym(KEY_A)
        await asyncio.sleep(gap)  # one key at a time: each step's first mark after the key is the key's
        for step in STEPS:
            t = marks.first_after(step, sent - (0.002 if step == "event" else 0))  # Mutter's event stamp is in ms
            if t is not None and t - sent < gap:
                steps[step].append(1000 * (t - sent))


def find(frame: np.ndarray, rgb: tuple[int, int, int]) -> tuple[int, int] | None:
    ys, xs = np.nonzero((frame[:, :, 2] == rgb[0]) & (frame[:, :, 1] == rgb[1]) & (frame[:, :, 0] == rgb[2]))
    return (int(xs.mean()), int(ys.mean())) if len(xs) > 100 else None


async def focus(handle: MutterHandle, kind: str) -> None:
    """Click the probe's window (found on a cast by its colour) so that it has the keyboard."""
    session = await MutterSession.open(handle.bus_address)
    s = session.stream
    capture = PipeWireCapture(s.node_id, s.x, s.y, s.w, s.h, env=handle.env())
    capture.start(lambda: None)
    try:
        colour = FOOT_BG if kind == "foot" else TK_GREEN
        deadline, box = time.monotonic() + 30, None
        while box is None and time.monotonic() < deadline:
            box = find(await asyncio.to_thread(capture.grab, 1), colour)
            await asyncio.sleep(0.2)  # polling for the probe's window, with a deadline
        if box is None:
            raise RuntimeError(f"the {kind} probe never showed on the cast")
        x, y = box[0] + (0 if kind == "foot" else 100), box[1] + (0 if kind == "foot" else 100)
        for _ in range(2):
            await session.pointer_motion(x, y)
            for down in (True, False):
                await session.pointer_button(0x110, down)
            await asyncio.sleep(0.3)  # the click's own redraws pass
    finally:
        await asyncio.to_thread(capture.close)
        await session.close()


@contextlib.contextmanager
def refresh_rate(rate: str | None) -> Iterator[None]:
    """Start Mutter's virtual monitor as ``WxH@rate`` (Mutter 43's syntax) though tests/wayland.py writes ``WxH``."""
    if rate is None:
        yield
        return
    real = subprocess.Popen

    def popen(args: list[str], *rest: object, **kwargs: object) -> subprocess.Popen[bytes]:
        if args and args[0] == "mutter":
            i = args.index("--virtual-monitor") + 1
            args = [*args[:i], f"{args[i]}@{rate}", *args[i + 1:]]
        return real(args, *rest, **kwargs)  # type: ignore[call-overload, no-any-return]

    subprocess.Popen = popen  # type: ignore[assignment, misc]
    try:
        yield
    finally:
        subprocess.Popen = real  # type: ignore[misc]


async def run(args: argparse.Namespace, costs: dict[str, Cost]) -> dict[str, dict[str, list[float]]]:
    size = args.size.split("@")
    w, h = (int(v) for v in size[0].split("x"))
    mutter_env = dict(e.split("=", 1) for e in args.compositor_env)
    with refresh_rate(size[1] if len(size) > 1 else None):
        handle = start_mutter(w, h, mutter_env=mutter_env or None)
    if args.cursor_mode is not None:
        mutter.CURSOR_EMBEDDED = args.cursor_mode  # benchmark only: RecordMonitor's cursor-mode
    marks = Marks()
    results: dict[str, dict[str, list[float]]] = {who: {s: [] for s in STEPS} for who in CONSUMERS}
    fifo = handle.runtime_dir / "gst-v.fifo"
    os.mkfifo(fifo)
    props = pipewiresrc_props(args.pipewiresrc)
    try:
        with probe(args.client, handle, marks):
            await focus(handle, args.client)
            per_turn = max(1, args.keys // args.turns)
            for _ in range(args.turns):
                for who in CONSUMERS:
                    cast = (no_cast(handle) if who == "none" else bare_cast(handle, marks, args.pipewiresrc)
                            if who == "bare" else agent_cast(handle, marks, props, fifo))
                    async with cast as (session, cpu):
                        await asyncio.sleep(1.5)  # the stream's first buffers and negotiation pass
                        (child0, reader0), buffers0 = cpu(), len(marks.times["pipewiresrc"])
                        compositor0 = process_cpu(handle.pids["mutter"])
                        await type_keys(session, marks, per_turn, results[who], args.gap)
                        child1, reader1 = cpu()
                        costs[who].compositor_s += process_cpu(handle.pids["mutter"]) - compositor0
                        costs[who].keys += per_turn
                        costs[who].child_s += child1 - child0
                        costs[who].reader_s += reader1 - reader0
                        costs[who].buffers += len(marks.times["pipewiresrc"]) - buffers0
    finally:
        handle.stop()
    return results


def report(results: dict[str, dict[str, list[float]]], costs: dict[str, Cost], load: float) -> str:
    """p50 (min–max) of each step's time since the key per consumer, then what each cost in CPU."""
    lines = [f"load (1 min) {load:.1f}",
             "| step | no cast p50 ms (min–max) | bare pipewiresrc | agent |", "|---|---|---|---|"]
    for step in STEPS:
        cells = [f"{statistics.median(v):.1f} ({min(v):.0f}–{max(v):.0f}, n={len(v)})" if (v := results[who][step])
                 else "-" for who in CONSUMERS]
        lines.append(f"| key → {step} | " + " | ".join(cells) + " |")
    for who, cost in costs.items():
        child, reader = cost.per_buffer()
        line = (f"{who}: compositor CPU {1000 * cost.compositor_s / max(cost.keys, 1):.1f} ms per key; "
                f"{cost.buffers} buffers for {cost.keys} keys")
        if who != "none":
            line += f"; CPU per buffer: gst-launch child {child:.1f} ms"
        if who == "agent":
            line += f", agent's reader thread {reader:.1f} ms"
        lines.append(line)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=20, help="keys per consumer")
    parser.add_argument("--turns", type=int, default=2, help="rounds of none/bare/agent turns")
    parser.add_argument("--gap", type=float, default=0.6, help="seconds between keys (one key in flight)")
    parser.add_argument("--client", choices=("foot", "tk"), default="foot")
    parser.add_argument("--size", default="1920x1080", help="virtual monitor WxH or WxH@R")
    parser.add_argument("--compositor-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--cursor-mode", type=int, choices=(0, 1, 2), default=None,
                        help="ScreenCast cursor-mode: 0 hidden, 1 embedded (the agent's), 2 metadata")
    parser.add_argument("--pipewiresrc", action="append", default=[], metavar="PROP=V",
                        help="pipewiresrc property for both consumers (e.g. always-copy=false, min-buffers=2); "
                             "the bare one has pipewiresrc's defaults otherwise, the agent's its own command's")
    args = parser.parse_args()
    costs = {who: Cost() for who in CONSUMERS}
    results = asyncio.run(run(args, costs))
    print(f"client {args.client}, size {args.size}, compositor env {args.compositor_env or '-'}, cursor-mode "
          f"{args.cursor_mode if args.cursor_mode is not None else 1}, bare pipewiresrc {args.pipewiresrc or '-'}, "
          f"agent's pipewiresrc {pipewiresrc_props(args.pipewiresrc)}")
    print(report(results, costs, os.getloadavg()[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
