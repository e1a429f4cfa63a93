"""``benchmarks/screen.py --backend wayland``: the X11 workloads on a headless GNOME compositor.

The desktop is tests/wayland.py's throw-away stack (``mutter --headless --virtual-monitor
1920x1080 --wayland`` with XWayland, on its own dbus-daemon, pipewire and wireplumber). The
agent subprocess picks the Wayland backend from that session's environment, as the session
helper does, and each workload (idle, typing, motion, video) is played on it exactly as on
X11: the Tk typing probe and ffplay run on XWayland, the reference viewer connects directly.

Next to each Helpline run the same workload is played for a **bare** ``pipewiresrc``
consumer: a Mutter ScreenCast of the same monitor read by ``gst-launch-1.0 pipewiresrc !
fakesink`` and nothing else. It is what the compositor can deliver here (it renders in
software), so its frame rate and key-to-frame latency are the ceiling and its CPU the floor
for any PipeWire reader. The two never run at once: every open cast costs Mutter a frame
copy of its own and delays the other cast's buffers (measured: the cast opened second got a
key's change 30-140 ms before the first one), so each is measured alone.

The agent's CPU includes its reader child — ``helpline-pwcast`` (agent/screen/wayland/native.py), or
``gst-launch-1.0`` with ``HELPLINE_PWCAST=off`` — (the frames' reader is part of the agent); the
compositor's CPU is reported too. The agent inherits this process's environment, so
``HELPLINE_PWCAST_PIXELS=full`` and ``HELPLINE_WAYLAND_CURSOR=metadata`` (the test stack's default is
embedded, tests/wayland.py) reach it too. ``--peer gnome-remote-desktop`` plays each
workload a third time on gnome-remote-desktop's RDP server (benchmarks/grd_peer.py), alone too.
Every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from agent.screen.wayland.frames import PipeWireCapture
from agent.screen.wayland.mutter import MutterSession
from agent.viewer import Viewer
from benchmarks import grd_peer, screen
from benchmarks.screen import (
    HEIGHT,
    TK_PROBE,
    WIDTH,
    CpuMeter,
    Meters,
    Result,
    direct_connect,
    format_result,
    load_figures,
    read_line,
    spawn,
)
from benchmarks.testsrc import player_source
from tests.wayland import MutterHandle, start_mutter

#: Who the comparison column is.
BARE = "pipewiresrc"


class TreeCpuMeter(CpuMeter):
    """CPU of a process and its children (the agent and its reader child), as % of one core."""

    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self._start: dict[int, float] = {}

    def _tree(self) -> dict[int, float]:
        assert self.proc is not None
        out: dict[int, float] = {}
        for proc in [self.proc, *self.proc.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = proc.cpu_times()
                out[proc.pid] = float(t.user + t.system)
        return out

    def start(self) -> None:
        self.t0, self._start = time.monotonic(), self._tree()

    def percent(self) -> float:
        used = sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._tree().items())
        return 100 * used / (time.monotonic() - self.t0)


def probe_box(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """The typing probe's square (x, y, w, h): 10 px inside the top left of the probe's 400x300 grey canvas."""
    grey = np.all(frame[:, :, :3] == 0x80, axis=2)
    ys, xs = np.nonzero(grey)
    if len(xs) < 1000:
        return None
    return int(xs.min()) + 10, int(ys.min()) + 10, 64, 64


class WaylandDesktop:
    """What screen.py's workloads need of a desktop: the clients' environment, and the screen as it is."""

    def __init__(self, handle: MutterHandle) -> None:
        self.handle = handle
        self.display = handle.display
        self.pid = handle.pids["mutter"]

    def env(self) -> dict[str, str]:
        """The session's environment; SDL (ffplay) told to draw as a native Wayland client, as modern players do."""
        return {**self.handle.env(), "SDL_VIDEODRIVER": "wayland"}

    async def focus_probe(self, viewer: Viewer) -> tuple[int, int, int, int]:
        """Where Mutter put the Tk typing probe (its grey canvas on the viewer), clicked to get the keyboard."""
        box = probe_box(viewer.framebuffer)
        if box is None:
            raise RuntimeError("the Tk typing probe is not on the viewer's screen")
        x, y, w, h = box

        def probe_is(value: int) -> Callable[[Viewer], bool]:
            return lambda v: bool(np.all(np.abs(v.region(x + 4, y + 4, w - 8, h - 8).astype(int) - value) < 40))

        # Mutter may drop a fresh RemoteDesktop session's first events: click until a key flips the probe,
        # then flip it back (the workload starts from black).
        for _ in range(10):
            await viewer.click(x + 200, y + 100)
            await viewer.send_key("KeyA", "down")
            await viewer.send_key("KeyA", "up")
            try:
                await viewer.wait_for(probe_is(255), timeout=5)
            except TimeoutError:
                continue
            await viewer.send_key("KeyA", "down")
            await viewer.send_key("KeyA", "up")
            await viewer.wait_for(probe_is(0), timeout=10)
            return box
        raise RuntimeError("keys never reached the Tk typing probe")

    async def grab_screen(self) -> np.ndarray:
        """The monitor now, through a cast of its own (opened only for this: no cost during the measurement)."""
        session = await MutterSession.open(self.handle.bus_address)
        s = session.stream
        capture = PipeWireCapture(s.node_id, s.x, s.y, s.w, s.h, env=self.handle.env())
        capture.start(lambda: None)
        try:
            frame = await asyncio.to_thread(capture.grab, 1)
            return np.ascontiguousarray(frame[:, :, :3])
        finally:
            await asyncio.to_thread(capture.close)
            await session.close()


class BareCast:
    """A Mutter ScreenCast read by ``gst-launch-1.0 -v pipewiresrc ! video/x-raw,format=BGRx ! fakesink``.

    The caps filter is the agent's format (without it pipewiresrc stays in PAUSED here); fakesink's
    ``last-message`` lines give each buffer's arrival time.
    """

    def __init__(self, session: MutterSession, proc: subprocess.Popen[str]) -> None:
        self.session, self.proc = session, proc
        self.arrivals: list[float] = []
        self.meter = CpuMeter(proc.pid)
        self._thread = threading.Thread(target=self._read, daemon=True, name="bare-cast")
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # fakesink's last-message: one "chain" line per buffer
            if "chain" in line:
                self.arrivals.append(time.monotonic())

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, handle: MutterHandle) -> AsyncIterator[BareCast]:
        session = await MutterSession.open(handle.bus_address)
        argv = ["gst-launch-1.0", "-v", "pipewiresrc", f"path={session.stream.node_id}", "!",
                "video/x-raw,format=BGRx", "!", "fakesink",
                "silent=false", "sync=false"]
        try:
            with spawn(argv, env=handle.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True) as proc:
                cast = cls(session, proc)
                deadline = time.monotonic() + 15
                while not cast.arrivals and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)  # polling for the first buffer, with a deadline
                if not cast.arrivals:
                    raise TimeoutError("the bare pipewiresrc consumer got no first buffer")
                await asyncio.sleep(0.5)  # let the first buffers' negotiation pass before any meter starts
                yield cast
        finally:
            await session.close()

    def frames_between(self, t0: float, t1: float) -> int:
        return sum(1 for t in list(self.arrivals) if t0 <= t < t1)


async def bare_idle(handle: MutterHandle, compositor: CpuMeter, seconds: float) -> Result:
    async with BareCast.open(handle) as cast:
        cast.meter.start()
        compositor.start()
        t0 = time.monotonic()
        await asyncio.sleep(min(seconds, 3))  # measuring interval
        t1 = time.monotonic()
        return Result("idle", {"frames": cast.frames_between(t0, t1), "seconds": t1 - t0,
                               "agent_cpu_pct": cast.meter.percent(), "compositor_cpu_pct": compositor.percent(),
                               **load_figures()}, system=BARE)


async def bare_typing(handle: MutterHandle, compositor: CpuMeter, seconds: float) -> Result:
    """The Tk probe flips on every key; the key goes in through the cast's own RemoteDesktop session."""
    with spawn([sys.executable, "-c", TK_PROBE], env=handle.env(), stdout=subprocess.PIPE, text=True) as tk:
        read_line(tk, lambda line: line == "ready", 15)
        box, deadline = None, time.monotonic() + 20
        while box is None and time.monotonic() < deadline:  # Tk says ready before Mutter shows the window
            box = probe_box(await WaylandDesktop(handle).grab_screen())
        if box is None:
            raise RuntimeError("the Tk typing probe is not on the screen")
        async with BareCast.open(handle) as cast:
            for _ in range(10):  # click it (the keyboard goes there) until a key brings a buffer
                await cast.session.pointer_motion(box[0] + 200, box[1] + 100)
                for down in (True, False):
                    await cast.session.pointer_button(0x110, down)
                await asyncio.sleep(0.5)  # the click's own redraws pass
                tried = time.monotonic()
                await cast.session.tap_keysym(0x61)
                while time.monotonic() < tried + 3 and not any(t > tried for t in list(cast.arrivals)):
                    await asyncio.sleep(0.01)  # polling the reader's arrival list
                if any(t > tried for t in list(cast.arrivals)):
                    break
            latencies: list[float] = []
            cast.meter.start()
            compositor.start()
            t0 = time.monotonic()
            n = int(seconds * 10)
            for i in range(n):
                await asyncio.sleep(max(0.0, t0 + i * 0.1 - time.monotonic()))  # pacing, 10 keys/s
                sent = time.monotonic()
                await cast.session.keysym(0x61, True)
                deadline = sent + 2
                while time.monotonic() < deadline:  # the first buffer after the key carries the change
                    arrived = next((t for t in list(cast.arrivals) if t > sent), None)
                    if arrived is not None:
                        latencies.append(arrived - sent)
                        break
                    await asyncio.sleep(0.002)  # polling the reader's arrival list
                await cast.session.keysym(0x61, False)
            await asyncio.sleep(max(0.0, t0 + n * 0.1 - time.monotonic()))
            elapsed = time.monotonic() - t0
            latencies.sort()
            q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else [float("nan")] * 19
            return Result("typing", {
                "keys": n, "frames_seen": len(latencies),
                "key_to_screen_p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
                "key_to_screen_p95_ms": 1000 * q[18],
                "key_to_screen_max_ms": 1000 * latencies[-1] if latencies else float("nan"),
                "frames_per_s": cast.frames_between(t0, t0 + elapsed) / elapsed,
                "agent_cpu_pct": cast.meter.percent(), "compositor_cpu_pct": compositor.percent(),
                **load_figures(),
            }, system=BARE)


async def bare_motion(handle: MutterHandle, compositor: CpuMeter, seconds: float, name: str, vf: str) -> Result:
    argv = ["ffplay", "-f", "lavfi", "-i", player_source(vf), "-fs", "-an", "-loglevel", "error", "-noborder",
            "-x", str(WIDTH), "-y", str(HEIGHT), "-left", "0", "-top", "0"]
    with spawn(argv, env={**WaylandDesktop(handle).env(), "SDL_AUDIODRIVER": "dummy"}, stdin=subprocess.DEVNULL,
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        async with BareCast.open(handle) as cast:
            await asyncio.sleep(2.0)  # warm-up, as for Helpline: the player is up and drawing
            cast.meter.start()
            compositor.start()
            t0 = time.monotonic()
            await asyncio.sleep(seconds)  # measuring interval
            t1 = time.monotonic()
            return Result(name, {"frames_per_s": cast.frames_between(t0, t1) / (t1 - t0),
                                 "agent_cpu_pct": cast.meter.percent(), "compositor_cpu_pct": compositor.percent(),
                                 **load_figures()}, system=BARE)


async def play_bare(name: str, handle: MutterHandle, compositor: CpuMeter, seconds: float) -> Result:
    if name == "idle":
        return await bare_idle(handle, compositor, seconds)
    if name == "typing":
        return await bare_typing(handle, compositor, seconds)
    if name == "motion":
        return await bare_motion(handle, compositor, seconds, name, "testsrc2=size=1920x1080:rate=30")
    if name == "video":
        return await bare_motion(handle, compositor, seconds, name, "testsrc2=size=1920x1080:rate=30,hue=H=2*PI*t/10")
    raise ValueError(name)


@contextlib.contextmanager
def wayland_agent(handle: MutterHandle) -> Iterator[tuple[str, int]]:
    """screen.py's agent subprocess in the Wayland session's environment (it picks the Wayland backend)."""
    with contextlib.ExitStack() as stack:
        agent = stack.enter_context(spawn(
            [sys.executable, screen.__file__, "--agent"],
            env={**handle.env(), "PYTHONPATH": str(screen.ROOT)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        ))
        port = int(read_line(agent, lambda line: line.startswith('{"port"'), 20).split(":")[1].strip(" }"))
        yield f"ws://127.0.0.1:{port}/", agent.pid


async def run(args: argparse.Namespace) -> list[Result]:
    handle = start_mutter(WIDTH, HEIGHT, log_dir=Path(args.log_dir) if getattr(args, "log_dir", None) else None)
    desktop = WaylandDesktop(handle)
    results: list[Result] = []
    wanted = args.only or ["idle", "typing", "motion", "video"]
    try:
        with wayland_agent(handle) as (url, agent_pid), contextlib.ExitStack() as peers:
            meters = Meters({})
            meters.meters = {"agent": TreeCpuMeter(agent_pid), "compositor": CpuMeter(desktop.pid)}
            peer: tuple[screen.Connect, Meters] | None = None
            if getattr(args, "peer", None) == grd_peer.NAME:
                grd = peers.enter_context(grd_peer.start_grd(handle, Path(args.log_dir) if getattr(args, "log_dir", None) else None))
                peer = (grd_peer.grd_connect(grd),  # type: ignore[assignment]
                        Meters({"agent": grd.pid, "compositor": desktop.pid}))
            for name in wanted:
                # Helpline, the bare consumer, the peer: one after the other (never two casts at once).
                results.append(await screen.play(name, direct_connect(url), meters, args.seconds,
                                                 desktop))  # type: ignore[arg-type]
                print(format_result(results[-1]), flush=True)
                bare = await play_bare(name, handle, CpuMeter(desktop.pid), args.seconds)
                results.append(bare)
                print(format_result(bare), flush=True)
                if peer is not None:
                    theirs = await screen.play(name, peer[0], peer[1], args.seconds, desktop)  # type: ignore[arg-type]
                    theirs.system = grd_peer.NAME
                    results.append(theirs)
                    print(format_result(theirs), flush=True)
    finally:
        handle.stop()
    return results


def side_by_side(results: list[Result]) -> str:
    """Each workload's figures for Helpline and the bare consumer (figures only one side has show '-')."""
    peer = any(r.system == grd_peer.NAME for r in results)
    head = f"| workload | figure | Helpline | bare {BARE} |" + (f" {grd_peer.NAME} (RDP) |" if peer else "")
    lines = [head, "|---|---|---|---|" + ("---|" if peer else "")]
    for ours in (r for r in results if r.system == "helpline"):
        columns = [ours.figures] + [next((r.figures for r in results if r.system == who and r.name == ours.name), {})
                                    for who in ([BARE, grd_peer.NAME] if peer else [BARE])]
        keys = list(dict.fromkeys(k for figures in columns for k in figures))
        for key in keys:
            lines.append(f"| {ours.name} | {key} | " + " | ".join(_cell(f.get(key)) for f in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"
