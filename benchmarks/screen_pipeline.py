"""The agent's screen pipeline alone: CPU per source frame, without a viewer or a network.

``benchmarks/screen.py`` measures whole sessions, whose frame rates and CPU depend on the
viewer and on how loaded the machine is. This one drives ``ScreenPipeline`` the way the
damage-driven session does (one step per damage wake-up) on a 1920x1080 Xvfb playing
ffplay's testsrc2, and reports the capture thread's CPU per step split into grab+compare
and encode, so two versions of the pipeline can be compared on a busy machine (thread CPU
time does not count the time other processes hold the core).

    .venv/bin/python benchmarks/screen_pipeline.py --workload motion --seconds 8
    .venv/bin/python benchmarks/screen_pipeline.py --workload typing --profile /tmp/typing.prof
    .venv/bin/python benchmarks/screen_pipeline.py --workload video --frames 60 [--whole-pictures]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from agent.screen import cut  # noqa: E402
from agent.screen.capture import Monitor, MssGrabber  # noqa: E402
from agent.screen.damage import XDamageSource  # noqa: E402
from agent.screen.encoder import decode  # noqa: E402
from agent.screen.pipeline import ScreenPipeline  # noqa: E402
from protocol import stream  # noqa: E402
from tests.xvfb import start_xvfb  # noqa: E402

WIDTH, HEIGHT = 1920, 1080
SOURCES = {
    "motion": "testsrc2=size=1920x1080:rate=30,format=bgra",
    "video": "testsrc2=size=1920x1080:rate=30,hue=H=2*PI*t/10,format=bgra",
}
TYPER = r"""
import sys, tkinter as tk
root = tk.Tk()
root.geometry("400x300+100+100")
c = tk.Canvas(root, width=400, height=300, highlightthickness=0, bg="#808080")
c.place(x=0, y=0)
probe = c.create_rectangle(10, 10, 74, 74, fill="#000000", outline="")
text = c.create_text(100, 150, text="", anchor="nw", font=("Helvetica", 16))
state = {"n": 0}
def tick():
    state["n"] += 1
    c.itemconfigure(probe, fill="#ffffff" if state["n"] % 2 else "#000000")
    c.itemconfigure(text, text="typing probe " + "abcdefghij"[: state["n"] % 11])
    root.after(100, tick)
root.after(100, tick)
root.mainloop()
"""


def run(workload: str, seconds: float, quality: int, profile: str | None) -> dict[str, float]:
    xvfb = start_xvfb(WIDTH, HEIGHT)
    with contextlib.ExitStack() as stack:
        stack.callback(xvfb.stop)
        env = xvfb.env()
        if workload == "typing":
            argv = [sys.executable, "-c", TYPER]
        else:
            argv = ["ffplay", "-f", "lavfi", "-i", SOURCES[workload], "-fs", "-an", "-loglevel", "error",
                    "-noborder", "-x", str(WIDTH), "-y", str(HEIGHT), "-left", "0", "-top", "0"]
        player = subprocess.Popen(argv, env={**env, "SDL_AUDIODRIVER": "dummy"}, stdin=subprocess.DEVNULL)
        stack.callback(player.wait)
        stack.callback(player.send_signal, signal.SIGKILL)
        grabber = MssGrabber(xvfb.display)
        stack.callback(grabber.close)
        damage = XDamageSource(xvfb.display)
        stack.callback(damage.close)
        wake = threading.Event()
        damage.start(wake.set)
        pipeline = ScreenPipeline(grabber, 1, lean_jpeg=True, batched=True)
        pipeline.step(time.monotonic(), quality, 0, None)
        time.sleep(2.0)  # the player starts; its first frames are not measured
        damage.take()
        steps = updates = nbytes = rect_px = dirty_tiles = 0
        grab_s = encode_s = 0.0
        profiler = cProfile.Profile() if profile else None
        cpu0, t0 = time.thread_time(), time.monotonic()
        if profiler:
            profiler.enable()
        while time.monotonic() - t0 < seconds:
            if not wake.wait(timeout=0.05):
                now = time.monotonic()
                due = pipeline.refresh_due_at()
                if due is None or due > now:
                    continue
            wake.clear()
            batch = damage.take()
            now = time.monotonic()
            result = pipeline.step(now, quality, steps % 65536, None if batch.full else batch.rects)
            steps += 1
            grab_s += result.grab_s
            encode_s += result.encode_s
            if result.update is not None:
                updates += 1
                nbytes += result.update.nbytes
                rect_px += sum(r.area for r in result.dirty_rects)
                dirty_tiles += result.dirty_count
        if profiler and profile:
            profiler.disable()
            profiler.dump_stats(profile)
        cpu, elapsed = time.thread_time() - cpu0, time.monotonic() - t0
    return {
        "steps_per_s": steps / elapsed, "updates_per_s": updates / elapsed, "bytes_per_s": nbytes / elapsed,
        "cpu_pct": 100 * cpu / elapsed, "cpu_ms_per_update": 1000 * cpu / max(updates, 1),
        "grab_compare_ms_per_update": 1000 * grab_s / max(updates, 1),
        "encode_ms_per_update": 1000 * encode_s / max(updates, 1),
        "sent_kpx_per_update": rect_px / 1000 / max(updates, 1),
        "dirty_tiles_per_update": dirty_tiles / max(updates, 1),
    }


class FileFrames:
    """ffmpeg's testsrc2 frames, one per grab: the same pixels for every version measured.

    Two buffers filled in turn and lent as they are, as the agent's two XShm segments are
    (:mod:`agent.screen.xshm_pair`): the pipeline adopts each frame as the viewer's without a copy.
    """

    def __init__(self, vf: str, frames: int) -> None:
        self._proc = subprocess.Popen(
            ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", vf.removesuffix(",format=bgra"), "-frames:v",
             str(frames), "-f", "rawvideo", "-pix_fmt", "bgra", "-"], stdout=subprocess.PIPE)
        self._pair = [np.empty((HEIGHT, WIDTH, 4), dtype=np.uint8) for _ in range(2)]
        self._buf = self._pair[0]

    def next(self) -> bool:
        out: Any = self._proc.stdout
        self._buf = self._pair[1] if self._buf is self._pair[0] else self._pair[0]
        view = memoryview(self._buf.reshape(-1).data)
        got = 0
        while got < len(view):
            n = out.readinto(view[got:])
            if not n:
                return False
            got += n
        return True

    def keeps_view(self, view: npt.NDArray[np.uint8]) -> bool:
        return any(view is buf for buf in self._pair)

    def monitors(self) -> list[Monitor]:
        return [Monitor(0, 0, WIDTH, HEIGHT), Monitor(0, 0, WIDTH, HEIGHT, True)]

    def grab(self, index: int) -> npt.NDArray[np.uint8]:
        return self._buf.copy()  # what mss's grab costs: a fresh frame

    def grab_view(self, index: int) -> npt.NDArray[np.uint8]:
        return self._buf

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait()


def _apply(viewer: npt.NDArray[np.uint8], messages: list[bytes]) -> None:
    """Draw an update's messages onto the viewer's BGR image, as the console does."""
    for message in messages:
        for u in stream.unpack_records(message):
            viewer[u.y : u.y + u.h, u.x : u.x + u.w] = decode(u.encoding, u.payload, u.w, u.h)


def _psnr(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10 * float(np.log10(255**2 / mse))


def run_frames(workload: str, frames: int, quality: int, psnr: bool = False, profile: str | None = None
               ) -> dict[str, float]:
    """Step once per source frame, the whole monitor each time (ffplay damages all of it).

    With ``psnr`` the updates are also decoded onto a viewer image and compared with the
    source frame (outside the measured CPU): the quality each change to the pipeline keeps.
    """
    source = FileFrames(SOURCES[workload], frames + 1)
    viewer = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    scores: list[float] = []
    try:
        pipeline = ScreenPipeline(source, 1, lean_jpeg=True, batched=True)  # as sessions with this server's viewers run
        source.next()
        first = pipeline.step(0.0, quality, 0, None)
        if psnr and first.update is not None:
            _apply(viewer, first.update.messages)
        cpu = 0.0
        steps = nbytes = rect_px = jpeg_px = messages = records = 0
        profiler = cProfile.Profile() if profile else None
        while source.next():
            t = time.thread_time()
            if profiler:
                profiler.enable()
            result = pipeline.step(steps / 30, quality, steps % 65536, None)
            if profiler:
                profiler.disable()
            cpu += time.thread_time() - t
            steps += 1
            if result.update is not None:
                nbytes += result.update.nbytes
                messages += len(result.update.messages)
                records += result.update.rects
                rect_px += sum(r.area for r in result.dirty_rects)
                jpeg_px += sum(u.w * u.h for m in result.update.messages for u in stream.unpack_records(m)
                               if u.encoding in (stream.Encoding.JPEG, stream.Encoding.JPEG_LEAN))
                if psnr:
                    _apply(viewer, result.update.messages)
            if psnr:
                scores.append(_psnr(viewer, source.grab_view(1)[:, :, :3]))
        if profiler and profile:
            profiler.dump_stats(profile)
    finally:
        source.close()
    figures = {"frames": steps, "cpu_ms_per_frame": 1000 * cpu / steps, "bytes_per_frame": nbytes / steps,
               "sent_kpx_per_frame": rect_px / 1000 / steps, "jpeg_kpx_per_frame": jpeg_px / 1000 / steps,
               "messages_per_frame": messages / steps,
               "records_per_frame": records / steps}
    if scores:
        figures["psnr_db"] = float(np.mean(scores))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=["typing", "motion", "video"], default="motion")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--quality", type=int, default=75, help="quality ladder step (the session adapts it)")
    parser.add_argument("--profile", help="write cProfile stats of the stepping loop here")
    parser.add_argument("--frames", type=int, help="feed this many rendered frames instead of a live Xvfb "
                        "(motion, video: load-independent CPU per frame)")
    parser.add_argument("--psnr", action="store_true", help="with --frames: decode the updates and report "
                        "the mean PSNR of the viewer's image against each source frame")
    parser.add_argument("--whole-pictures", action="store_true", help="send pictures over FILLs whole, as "
                        "without the C part (agent/screen/_cut.c): the cut's share of the figures")
    args = parser.parse_args()
    if args.whole_pictures:
        cut.AVAILABLE = False
    if args.frames:
        figures = run_frames(args.workload, args.frames, args.quality, args.psnr, args.profile)
        print(json.dumps({"workload": args.workload, "quality": args.quality,
                          **{k: round(v, 2) for k, v in figures.items()}}))
        return
    figures = run(args.workload, args.seconds, args.quality, args.profile)
    print(json.dumps({"workload": args.workload, **{k: round(v, 2) for k, v in figures.items()}}))


if __name__ == "__main__":
    main()
