"""Watching a session stream for ``helpline viewer``: the reference viewer, stats lines, PNG snapshots.

Imported only when ``helpline viewer`` runs: it needs numpy and websockets (the agent's extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt
import websockets
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from agent.screen.encoder import encode_png
from agent.viewer import Viewer
from common.files import atomic_write

#: zlib level for saved snapshots (a file, not a live stream: smaller beats faster).
SNAPSHOT_ZLIB_LEVEL = 6


def run(url: str, *, ssl_context: ssl.SSLContext | None, headers: Mapping[str, str], seconds: float,
        snapshot: Path | None, after: int, as_json: bool) -> int:
    """Watch ``url`` (see :func:`watch`) and turn every way it can fail into a message and exit status 1."""
    try:
        asyncio.run(watch(url, ssl_context=ssl_context, headers=headers, seconds=seconds, snapshot=snapshot,
                          after=after, as_json=as_json))
    except InvalidStatus as exc:
        print(f"helpline: the server refused the stream: {refusal(exc)}", file=sys.stderr)
        return 1
    except ConnectionError as exc:  # before OSError, its base class
        print(f"helpline: {exc}", file=sys.stderr)
        return 1
    except (InvalidURI, InvalidHandshake, OSError, websockets.ConnectionClosedError) as exc:
        print(f"helpline: cannot watch {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


@dataclass
class WatchResult:
    updates: int
    bytes_received: int
    snapshot: Path | None = None


def save_png(framebuffer: npt.NDArray[np.uint8], path: Path) -> None:
    """Write a BGR framebuffer as an RGB PNG (atomically: a watcher never reads half a PNG)."""
    atomic_write(path, encode_png(framebuffer, SNAPSHOT_ZLIB_LEVEL), 0o644)


def stats_line(viewer: Viewer, since: float, as_json: bool) -> str:
    ups, bps = viewer.rates(since)
    h, w = viewer.framebuffer.shape[:2]
    agent = viewer.agent_stats
    figures = {
        "size": f"{w}x{h}", "monitor": viewer.selected, "updates_per_s": round(ups, 1),
        "kB_per_s": round(bps / 1000, 1), "updates": viewer.stats.updates,
        "quality": agent.quality if agent else None, "rtt_ms": round(agent.rtt_ms, 1) if agent else None,
        "errors": len(viewer.stats.errors),
    }
    if as_json:
        return json.dumps(figures)
    extra = f" quality={figures['quality']} rtt={figures['rtt_ms']}ms" if agent else ""
    return (f"{figures['size']} monitor={figures['monitor']} {ups:.1f} updates/s {bps / 1000:.1f} kB/s "
            f"total={viewer.stats.updates}{extra} errors={figures['errors']}")


async def watch(url: str, *, ssl_context: ssl.SSLContext | None, headers: Mapping[str, str], seconds: float = 0.0,
                snapshot: Path | None = None, after: int = 1, as_json: bool = False, out: TextIO = sys.stdout,
                clock: Callable[[], float] = time.monotonic) -> WatchResult:
    """Watch one stream until it closes, ``seconds`` pass, or the snapshot is saved.

    Raises ConnectionError if the stream ends before the snapshot could be taken.
    """
    async with Viewer(url, ssl_context=ssl_context, headers=headers, clock=clock) as viewer:
        start = last = clock()
        while not viewer.closed.is_set():
            target = start + seconds if seconds else None
            tick = min(last + 1.0, target) if target is not None else last + 1.0
            with contextlib.suppress(TimeoutError):
                if snapshot is not None:
                    try:
                        await viewer.wait_for(lambda v: v.stats.updates >= after, timeout=max(0.0, tick - clock()))
                    except ConnectionError:
                        break  # closed early: reported below
                else:
                    await asyncio.wait_for(viewer.closed.wait(), max(0.0, tick - clock()))
            if snapshot is not None and viewer.stats.updates >= after:
                save_png(viewer.framebuffer, snapshot)
                print(f"saved {snapshot} ({viewer.framebuffer.shape[1]}x{viewer.framebuffer.shape[0]}) "
                      f"after {viewer.stats.updates} updates", file=out, flush=True)
                return WatchResult(viewer.stats.updates, viewer.stats.bytes_received, snapshot)
            now = clock()
            if now >= last + 1.0 or viewer.closed.is_set() or (target is not None and now >= target):
                print(stats_line(viewer, last, as_json), file=out, flush=True)
                last = now
            if target is not None and now >= target:
                break
        if snapshot is not None:
            raise ConnectionError(f"the stream ended after {viewer.stats.updates} of {after} updates; "
                                  "no snapshot saved")
        return WatchResult(viewer.stats.updates, viewer.stats.bytes_received)


def refusal(exc: InvalidStatus) -> str:
    """The server's ``{"error": {...}}`` body of a refused upgrade, in one line."""
    status = exc.response.status_code
    try:
        error = json.loads(exc.response.body or b"{}")["error"]
        return f"{status} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}"
