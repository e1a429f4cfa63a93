"""Screen-pipeline benchmark on a 1920x1080 Xvfb.

Runs the agent side (``run_screen_session`` behind a direct ``websockets.serve``) in a
subprocess so its CPU time is measured alone, connects the reference viewer, and plays
four workloads: idle, typing (10 keys/s flipping a 64x64 probe), full-screen motion
(ffplay testsrc2) and video-like motion (testsrc2 with a rotating hue). Every process
started here is killed by PID at the end.

    .venv/bin/python benchmarks/screen.py            # all workloads
    .venv/bin/python benchmarks/screen.py --only typing --seconds 5
    .venv/bin/python benchmarks/screen.py --url wss://…/stream   # through a real server later
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from agent.viewer import Viewer  # noqa: E402
from tests.xvfb import XvfbHandle, start_xvfb  # noqa: E402

WIDTH, HEIGHT = 1920, 1080
PROBE = (110, 110, 64, 64)  # x, y, w, h of the probe square on screen

TK_PROBE = r"""
import sys, tkinter as tk
root = tk.Tk()
root.geometry("400x300+100+100")
c = tk.Canvas(root, width=400, height=300, highlightthickness=0, bg="#808080")
c.place(x=0, y=0)
c.create_text(100, 150, text="typing probe", anchor="nw", font=("Helvetica", 16))
probe = c.create_rectangle(10, 10, 74, 74, fill="#000000", outline="")
state = {"white": False}
def on_key(event):
    state["white"] = not state["white"]
    c.itemconfigure(probe, fill="#ffffff" if state["white"] else "#000000")
    root.update_idletasks()
root.bind("<KeyPress>", on_key)
def ready():
    root.focus_force()
    root.update()
    print("ready", flush=True)
root.after(100, ready)
root.mainloop()
"""


@dataclass
class Result:
    name: str
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --- agent subprocess ------------------------------------------------------------------


async def agent_main(display: str, mode: str) -> None:
    """The agent side: one screen session per websocket connection."""
    import websockets

    from agent.screen import run_screen_session

    async def handler(ws: Any) -> None:
        stats = await run_screen_session(ws, mode=mode, display=display)  # type: ignore[arg-type]
        print(json.dumps({"session": stats.__dict__}), flush=True)

    async with websockets.serve(handler, "127.0.0.1", 0, max_size=1 << 20) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(json.dumps({"port": port}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent goes


# --- process helpers --------------------------------------------------------------------


def kill(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


@contextlib.contextmanager
def spawn(argv: list[str], env: dict[str, str], **kwargs: Any) -> Iterator[subprocess.Popen[Any]]:
    proc = subprocess.Popen(argv, env=env, **kwargs)
    try:
        yield proc
    finally:
        kill(proc)


def read_line(proc: subprocess.Popen[str], predicate: Callable[[str], bool], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process {proc.pid} exited before printing the expected line")
        if predicate(line.strip()):
            return line.strip()
    raise TimeoutError("no matching line")


class CpuMeter:
    """CPU seconds of one process between start() and stop(), as % of one core."""

    def __init__(self, pid: int | None) -> None:
        self.proc = psutil.Process(pid) if pid else None
        self.t0 = self.c0 = 0.0

    def _cpu(self) -> float:
        assert self.proc is not None
        times = self.proc.cpu_times()
        return float(times.user + times.system)

    def start(self) -> None:
        if self.proc:
            self.t0, self.c0 = time.monotonic(), self._cpu()

    def percent(self) -> float:
        if not self.proc:
            return float("nan")
        return 100 * (self._cpu() - self.c0) / (time.monotonic() - self.t0)


# --- workloads --------------------------------------------------------------------------


def received_more(before: int) -> Callable[[Viewer], bool]:
    return lambda v: v.stats.bytes_received > before


async def settle(viewer: Viewer, quiet_s: float = 0.6, timeout: float = 15) -> None:
    """Wait until no update arrived for ``quiet_s`` (first frame and refresh done)."""
    await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await viewer.wait_for(received_more(viewer.stats.bytes_received), timeout=quiet_s)
        except TimeoutError:
            return
    raise TimeoutError("screen never settled")


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[Viewer]:
    async with Viewer(url) as viewer:
        yield viewer


async def idle(url: str, cpu: CpuMeter, seconds: float) -> Result:
    async with connect(url) as viewer:
        await settle(viewer)
        before = viewer.stats.bytes_received
        cpu.start()
        t0 = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await viewer.wait_for(lambda v: False, timeout=min(seconds, 3))
        elapsed = time.monotonic() - t0
        return Result("idle", {"bytes": viewer.stats.bytes_received - before, "seconds": elapsed,
                               "agent_cpu_pct": cpu.percent()})


async def typing(url: str, cpu: CpuMeter, seconds: float, xvfb: XvfbHandle) -> Result:
    with spawn([sys.executable, "-c", TK_PROBE], env=xvfb.env(), stdout=subprocess.PIPE, text=True) as tk:
        read_line(tk, lambda line: line == "ready", 15)
        async with connect(url) as viewer:
            await settle(viewer)
            px, py, pw, ph = PROBE
            await viewer.send_mouse(px + 200, py + 100)  # pointer over the Tk window

            def probe_is(value: int) -> Callable[[Viewer], bool]:
                return lambda v: bool(np.all(np.abs(v.region(px + 4, py + 4, pw - 8, ph - 8).astype(int) - value) < 40))

            white = False
            latencies: list[float] = []
            before = viewer.stats.bytes_received
            cpu.start()
            t0 = time.monotonic()
            n = int(seconds * 10)
            for i in range(n):
                due = t0 + i * 0.1
                await asyncio.sleep(max(0.0, due - time.monotonic()))  # pacing, 10 keys/s
                white = not white
                sent = time.monotonic()
                await viewer.send_key("KeyA", "down")
                await viewer.wait_for(probe_is(255 if white else 0), timeout=2)
                latencies.append(time.monotonic() - sent)
                await viewer.send_key("KeyA", "up")
            await asyncio.sleep(max(0.0, t0 + n * 0.1 - time.monotonic()))
            elapsed = time.monotonic() - t0
            latencies.sort()
            q = statistics.quantiles(latencies, n=20)
            return Result("typing", {
                "keys": n,
                "key_to_screen_p50_ms": 1000 * statistics.median(latencies),
                "key_to_screen_p95_ms": 1000 * q[18],
                "key_to_screen_max_ms": 1000 * latencies[-1],
                "bytes_per_s": (viewer.stats.bytes_received - before) / elapsed,
                "agent_cpu_pct": cpu.percent(),
            })


async def motion(url: str, cpu: CpuMeter, seconds: float, xvfb: XvfbHandle, name: str, vf: str) -> Result:
    argv = ["ffplay", "-f", "lavfi", "-i", vf, "-fs", "-an", "-loglevel", "error", "-stats", "-noborder",
            "-x", str(WIDTH), "-y", str(HEIGHT), "-left", "0", "-top", "0"]
    log = tempfile.NamedTemporaryFile(prefix="ffplay-", suffix=".log")  # noqa: SIM115 - closed below
    with log, spawn(argv, env={**xvfb.env(), "SDL_AUDIODRIVER": "dummy"}, stdin=subprocess.DEVNULL,
                    stderr=log) as player:
        async with connect(url) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 5, timeout=15)
            await asyncio.sleep(1.0)  # warm-up: quality adaptation settles
            rtts: list[float] = []
            cpu.start()
            t0 = time.monotonic()
            drops0 = ffplay_drops(log.name)
            u0, b0 = viewer.stats.updates, viewer.stats.bytes_received
            while time.monotonic() - t0 < seconds:
                await asyncio.sleep(0.5)
                if viewer.agent_stats is not None:
                    rtts.append(viewer.agent_stats.rtt_ms)
            elapsed = time.monotonic() - t0
            source_fps = 30 - (ffplay_drops(log.name) - drops0) / elapsed
            ups = (viewer.stats.updates - u0) / elapsed
            bps = (viewer.stats.bytes_received - b0) / elapsed
            agent_cpu = cpu.percent()
            # Motion stops: freeze the player; the still frame must become exact (lossless).
            os.kill(player.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            refreshes = viewer.stats.refreshes
            await viewer.wait_for(lambda v: v.stats.refreshes > refreshes, timeout=5)
            await settle(viewer, quiet_s=0.3)
            settled = max(t for t, _ in viewer.stats.arrivals)
            screen = grab(xvfb.display)
            exact = bool(np.array_equal(viewer.framebuffer, screen))
            os.kill(player.pid, signal.SIGCONT)
            half = max(1, len(rtts) // 2)
            return Result(name, {
                "source_fps": source_fps,
                "updates_per_s": ups,
                "bytes_per_s": bps,
                "agent_cpu_pct": agent_cpu,
                "ack_rtt_first_half_ms": statistics.mean(rtts[:half]) if rtts else float("nan"),
                "ack_rtt_second_half_ms": statistics.mean(rtts[half:]) if rtts[half:] else float("nan"),
                "jpeg_quality": float(viewer.agent_stats.quality if viewer.agent_stats else 0),
                "lossless_done_after_stop_ms": 1000 * (settled - stopped),
                "exact_after_refresh": float(exact),
            })


def ffplay_drops(path: str) -> int:
    """Frames ffplay dropped so far (its -stats line: ``fd=N``), to tell a slow source from a slow agent."""
    text = Path(path).read_bytes().decode(errors="replace")
    found = re.findall(r"fd=\s*(\d+)", text)
    return int(found[-1]) if found else 0


def grab(display: str) -> np.ndarray:
    import mss

    with mss.MSS(display=display) as sct:
        shot = sct.grab(sct.monitors[1])
    return np.frombuffer(shot.raw, dtype=np.uint8).reshape(shot.height, shot.width, 4)[:, :, :3].copy()


async def run(args: argparse.Namespace) -> list[Result]:
    xvfb = start_xvfb(WIDTH, HEIGHT)
    results: list[Result] = []
    try:
        with contextlib.ExitStack() as stack:
            url, agent_pid = args.url, args.agent_pid
            if url is None:
                agent = stack.enter_context(spawn(
                    [sys.executable, __file__, "--agent", "--display", xvfb.display],
                    env={**xvfb.env(), "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    text=True,
                ))
                port = json.loads(read_line(agent, lambda line: line.startswith('{"port"'), 20))["port"]
                url, agent_pid = f"ws://127.0.0.1:{port}/", agent.pid
            cpu = CpuMeter(agent_pid)
            wanted = args.only or ["idle", "typing", "motion", "video"]
            for name in wanted:
                if name == "idle":
                    results.append(await idle(url, cpu, args.seconds))
                elif name == "typing":
                    results.append(await typing(url, cpu, args.seconds, xvfb))
                elif name == "motion":
                    results.append(await motion(url, cpu, args.seconds, xvfb, "motion",
                                                "testsrc2=size=1920x1080:rate=30"))
                elif name == "video":
                    results.append(await motion(url, cpu, args.seconds, xvfb, "video",
                                                "testsrc2=size=1920x1080:rate=30,hue=H=2*PI*t/10"))
                print(format_result(results[-1]), flush=True)
    finally:
        xvfb.stop()
    return results


def format_result(result: Result) -> str:
    figures = ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.figures.items())
    return f"{result.name:7s} {figures}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--display", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="control", help=argparse.SUPPRESS)
    parser.add_argument("--url", help="viewer URL of an already running session (default: start a local agent)")
    parser.add_argument("--agent-pid", type=int, help="PID whose CPU to measure when --url is given")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each workload (max 10)")
    parser.add_argument("--only", action="append", choices=["idle", "typing", "motion", "video"])
    parser.add_argument("--json", action="store_true", help="print results as JSON at the end")
    args = parser.parse_args(argv)
    if args.agent:
        asyncio.run(agent_main(args.display, args.mode))
        return 0
    args.seconds = min(args.seconds, 10.0)
    results = asyncio.run(run(args))
    if args.json:
        print(json.dumps({r.name: r.figures for r in results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
