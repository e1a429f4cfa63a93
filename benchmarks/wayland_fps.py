"""Why headless Mutter delivers so few frames of a full-screen player: a bare cast under variations.

Each variation starts its own tests/wayland.py stack (headless Mutter 1920x1080, software
rendering), plays ffplay's ``testsrc2`` at 30 frames/s as a native Wayland client (SDL), and
counts the buffers a bare ``gst-launch-1.0 pipewiresrc ! fakesink`` consumer of a Mutter
ScreenCast receives — the ceiling of any PipeWire reader, Helpline's included. Reported per
variation: the frames the player itself submits per second (``wl_surface.commit`` requests in
its ``WAYLAND_DEBUG=client`` trace), first with no cast open, then with the cast open; frames/s
at the consumer; the compositor's, player's, pipewire's and consumer's CPU in % of one core.

    .venv/bin/python benchmarks/wayland_fps.py --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.screen import CpuMeter, spawn  # noqa: E402
from benchmarks.screen_wayland import BareCast  # noqa: E402
from benchmarks.testsrc import player_source  # noqa: E402
from tests.wayland import start_mutter  # noqa: E402


@dataclass
class Variation:
    """One run: extra environment for Mutter and for the player, and the player's size."""

    name: str
    mutter_env: dict[str, str] = field(default_factory=dict)
    player_env: dict[str, str] = field(default_factory=dict)
    size: tuple[int, int] = (1920, 1080)
    #: The virtual monitor (the cast copies all of it for every frame).
    monitor: tuple[int, int] = (1920, 1080)
    #: Niceness for Mutter and the player (negative: ahead of the box's other work; root only).
    nice: int | None = None


VARIATIONS = [
    Variation("default (llvmpipe, LP_NUM_THREADS unset = cores)"),
    Variation("mutter LP_NUM_THREADS=1", mutter_env={"LP_NUM_THREADS": "1"}),
    Variation("mutter LP_NUM_THREADS=4", mutter_env={"LP_NUM_THREADS": "4"}),
    Variation("player SDL_RENDER_DRIVER=software (wl_shm, no GL in the client)",
              player_env={"SDL_RENDER_DRIVER": "software"}),
    Variation("player 640x360 window", size=(640, 360)),
    Variation("mutter MUTTER_DEBUG_DISABLE_HW_CURSORS=1", mutter_env={"MUTTER_DEBUG_DISABLE_HW_CURSORS": "1"}),
    Variation("monitor and player 960x540", size=(960, 540), monitor=(960, 540)),
    Variation("the whole stack, player and consumer at nice -15 (ahead of the box's load)", nice=-15),
]


def renice(pid: int, nice: int) -> None:
    """Every thread of ``pid`` (Linux niceness is per thread: llvmpipe renders in worker threads)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.setpriority(os.PRIO_PROCESS, int(tid), nice)


class Commits:
    """The player's ``wl_surface.commit`` requests, counted from its ``WAYLAND_DEBUG=client`` trace file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def count(self) -> int:
        return len(re.findall(rb"wl_surface@\d+\.commit\(", self.path.read_bytes()))


async def measure(v: Variation, seconds: float, log_dir: Path) -> dict[str, float]:
    handle = start_mutter(*v.monitor, mutter_env=v.mutter_env)
    try:
        if v.nice is not None:  # the whole stack: dbus, pipewire, wireplumber, mutter
            for pid in handle.pids.values():
                renice(pid, v.nice)
        w, h = v.size
        argv = ["ffplay", "-f", "lavfi", "-i", player_source(f"testsrc2=size={w}x{h}:rate=30"), "-an",
                "-loglevel", "error", "-noborder", "-x", str(w), "-y", str(h), "-left", "0", "-top", "0"]
        if v.size == v.monitor:
            argv.insert(5, "-fs")
        env = {**handle.env(), "SDL_VIDEODRIVER": "wayland", "SDL_AUDIODRIVER": "dummy", "WAYLAND_DEBUG": "client",
               **v.player_env}
        trace = log_dir / "player-wayland.trace"
        with trace.open("wb") as out, spawn(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=out) as player:
            if v.nice is not None:
                renice(player.pid, v.nice)
            commits = Commits(trace)
            await asyncio.sleep(3.0)  # warm-up: the player is up and drawing
            c0, t0 = commits.count(), time.monotonic()
            await asyncio.sleep(seconds)  # measuring interval, no cast open
            alone = (commits.count() - c0) / (time.monotonic() - t0)
            async with BareCast.open(handle) as cast:
                if v.nice is not None:
                    renice(cast.proc.pid, v.nice)
                await asyncio.sleep(1.0)  # the cast's start passes
                compositor, client = CpuMeter(handle.pids["mutter"]), CpuMeter(player.pid)
                pipewire = CpuMeter(handle.pids["pipewire"])
                for meter in (cast.meter, compositor, client, pipewire):
                    meter.start()
                c0, t0 = commits.count(), time.monotonic()
                await asyncio.sleep(seconds)  # measuring interval, the cast open
                t1 = time.monotonic()
                fps = cast.frames_between(t0, t1) / (t1 - t0)
                cpu = compositor.percent()
                return {"frames_per_s": fps, "player_commits_alone": alone,
                        "player_commits_cast": (commits.count() - c0) / (t1 - t0), "compositor_cpu_pct": cpu,
                        "compositor_ms_per_frame": 10 * cpu / fps if fps else float("nan"),
                        "player_cpu_pct": client.percent(), "consumer_cpu_pct": cast.meter.percent(),
                        "pipewire_cpu_pct": pipewire.percent(), "load1": os.getloadavg()[0]}
    finally:
        handle.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--only", type=int, nargs="*", help="indexes into the variation list")
    args = parser.parse_args()
    chosen = [VARIATIONS[i] for i in args.only] if args.only else VARIATIONS
    print("| variation | player frames/s, no cast | player frames/s, cast open | frames/s at pipewiresrc "
          "| compositor CPU % | its CPU ms per frame | player CPU % | pipewire + consumer CPU % | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for v in chosen:
        with tempfile.TemporaryDirectory(prefix="wayland-fps-") as tmp:
            try:
                r = await measure(v, args.seconds, Path(tmp))
            except TimeoutError as exc:  # a loaded box: say so in the table, go on with the next variation
                print(f"| {v.name} | {exc} |", flush=True)
                continue
        print(f"| {v.name} | {r['player_commits_alone']:.1f} | {r['player_commits_cast']:.1f} "
              f"| {r['frames_per_s']:.1f} | {r['compositor_cpu_pct']:.0f} "
              f"| {r['compositor_ms_per_frame']:.0f} | {r['player_cpu_pct']:.0f} "
              f"| {r['pipewire_cpu_pct']:.0f} + {r['consumer_cpu_pct']:.0f} "
              f"| {r['load1']:.1f} |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
