"""Which testsrc2 frame a viewer shows, and how close its picture is to that frame.

Counting *updates* rewards a pipeline that sends half-drawn frames twice; what counts is
how many distinct source frames reached the technician (issue 13). ffmpeg's testsrc2
draws its timestamp and frame number in the top-left corner, so the frame a viewer holds
is the reference whose corner is nearest to the viewer's corner (references rendered by
ffmpeg with the same filter chain, searched in a window after the last frame found).
:func:`psnr_against_source` renders the full reference frames afterwards and gives the
PSNR of the viewer's pictures against them.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

#: The corner with the timestamp and frame number (x, y, w, h), same at every frame size.
#: The source must end in ``format=bgra`` (:func:`player_source`): ffplay then shows RGB as
#: is, and the screen equals ffmpeg's rendering exactly (through YUV it differs by ~24 dB).
CORNER = (0, 0, 104, 36)
#: Frames searched after the last one found (a viewer never goes back in time).
WINDOW = 120


def luma(bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    """Luma of BGR pixels (JPEG keeps luma sharp and smears colour: compare what survives)."""
    weighted = bgr[..., 0] * 29 + bgr[..., 1].astype(np.int32) * 150 + bgr[..., 2].astype(np.int32) * 77
    return np.asarray(weighted >> 8, dtype=np.int16)


def render(vf: str, frames: int, width: int, height: int, crop: tuple[int, int, int, int] | None = None,
           select: list[int] | None = None) -> npt.NDArray[np.uint8]:
    """BGR frames of the lavfi source ``vf`` from ffmpeg: the first ``frames``, or those in ``select``."""
    chain = []
    if select is not None:
        chain.append("select=" + "+".join(f"eq(n\\,{n})" for n in sorted(set(select))))
    if crop is not None:
        x, y, w, h = crop
        chain.append(f"crop={w}:{h}:{x}:{y}")
        width, height = w, h
    count = len(set(select)) if select is not None else frames
    argv = ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", vf, "-frames:v", str(count)]
    if chain:
        argv += ["-vf", ",".join(chain)]
    argv += ["-vsync", "0", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
    out = subprocess.run(argv, capture_output=True, check=True, timeout=600).stdout
    return np.frombuffer(out, dtype=np.uint8).reshape(-1, height, width, 3)


@dataclass
class FrameTracker:
    """Identifies the source frame in a viewer's framebuffer after each update."""

    references: npt.NDArray[np.int16]  # (n, h, w) grey corners
    last: int = -1
    seen: dict[int, float] = field(default_factory=dict)
    samples: list[tuple[int, npt.NDArray[np.uint8]]] = field(default_factory=list)
    sample_every: int = 10
    _updates: int = -1
    _observed: int = 0

    @classmethod
    def for_source(cls, vf: str, frames: int) -> FrameTracker:
        return cls(luma(render(vf, frames, 0, 0, crop=CORNER)))

    def identify(self, framebuffer: npt.NDArray[np.uint8]) -> tuple[int, float]:
        """(frame number, best/second-best squared-difference ratio) of the nearest reference.

        Squared differences: digit shapes differ by large steps, JPEG noise by small
        ones. A ratio well below 1 means one reference clearly fits best.
        """
        x, y, w, h = CORNER
        corner = luma(framebuffer[y : y + h, x : x + w]).astype(np.int32)
        lo = 0 if self.last < 0 else self.last
        hi = len(self.references) if self.last < 0 else min(len(self.references), self.last + WINDOW)
        if hi - lo < 2:
            return -1, math.inf
        distances = ((self.references[lo:hi].astype(np.int32) - corner) ** 2).mean(axis=(1, 2))
        order = np.argsort(distances)[:2]
        best, second = float(distances[order[0]]), float(distances[order[1]])
        return lo + int(order[0]), best / second if second else 0.0

    def observer(self, now: Callable[[], float]) -> Callable[[Any], bool]:
        """A ``wait_for`` predicate that looks at every complete update (and never holds)."""

        def observe(viewer: Any) -> bool:
            if viewer.stats.updates != self._updates:
                self._updates = viewer.stats.updates
                frame, ratio = self.identify(viewer.framebuffer)
                if frame >= 0 and ratio < 0.9:  # one clear match (not a half-drawn or smeared corner)
                    self.last = frame
                    self.seen.setdefault(frame, now())
                    self._observed += 1
                    if self._observed % self.sample_every == 0:
                        self.samples.append((frame, viewer.framebuffer.copy()))
            return False

        return observe

    def distinct_between(self, t0: float, t1: float) -> int:
        return sum(1 for t in self.seen.values() if t0 <= t <= t1)


def player_source(vf: str) -> str:
    """``vf`` as ffplay must play it for the references to match the screen exactly."""
    return vf if vf.endswith("format=bgra") else f"{vf},format=bgra"


def psnr(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255 * 255 / mse)


def psnr_against_source(vf: str, samples: list[tuple[int, npt.NDArray[np.uint8]]], width: int, height: int
                        ) -> float:
    """Mean PSNR (dB) of the sampled viewer pictures against the source frames they show."""
    if not samples:
        return math.nan
    numbers = sorted({n for n, _ in samples})
    frames = render(vf, 0, width, height, select=numbers)
    by_number = dict(zip(numbers, frames, strict=False))
    values = [psnr(picture, by_number[n]) for n, picture in samples if n in by_number]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.inf
    return sum(finite) / len(finite)
