"""``helpline viewer URL`` — watch a session stream from a terminal (admins, smoke checks).

Connects the reference :class:`~agent.viewer.Viewer` to a session's console stream
(``wss://server:8444/api/v1/sessions/{id}/stream``, or a direct ``ws://`` tunnel),
prints one stats line per second, and can save the decoded framebuffer as a PNG after N
updates. ``wss://`` is verified against the org CA only (``--ca``, or the server's PKI
found through ``--config``/``--data``); verification is never turned off. The API token
is read from ``$HELPLINE_TOKEN`` or ``--token-file`` (never from the command line, where
``ps`` would show it) and sent as ``Authorization: Bearer``; the Origin header is the
console's own, which the stream's Origin check requires.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt
import websockets
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from agent.screen.encoder import encode_png
from agent.viewer import Viewer
from certs import tls
from common.files import atomic_write

from .common import add_server_options, server_config

TOKEN_ENV = "HELPLINE_TOKEN"  # noqa: S105 - the name of a variable, not a secret
#: zlib level for saved snapshots (a file, not a live stream: smaller beats faster).
SNAPSHOT_ZLIB_LEVEL = 6


class UsageError(Exception):
    """Bad arguments; exit status 2."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "viewer", help="watch a session stream: stats, optional PNG snapshot",
        description="Connect to a session stream URL (as shown in a session's stream_url), print updates/s, "
        "kB/s, JPEG quality and ack round-trip once a second, and optionally save the screen as PNG. "
        f"Authentication: an API token (helpline admin user token NAME) in ${TOKEN_ENV} or --token-file.")
    parser.add_argument("url", help="wss://HOST:PORT/api/v1/sessions/ID/stream (https:// is accepted), or ws://")
    parser.add_argument("--ca", type=Path, help="org CA certificate (PEM) to verify the server; default: the "
                        "server's PKI from --config/--data")
    parser.add_argument("--token-file", type=Path, help=f"file holding the API token (default: ${TOKEN_ENV})")
    parser.add_argument("--origin", help="Origin header (default: scheme://host:port of the URL)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0 = until the stream ends)")
    parser.add_argument("--snapshot", type=Path, metavar="FILE", help="save the framebuffer as PNG and exit")
    parser.add_argument("--after", type=int, default=1, metavar="N",
                        help="with --snapshot: save after N complete updates (default 1)")
    parser.add_argument("--json", action="store_true", help="stats lines as JSON objects")
    add_server_options(parser)
    parser.set_defaults(handler=_run)


# --- arguments → connection parameters -----------------------------------------------------


def stream_url(url: str) -> str:
    """Normalise the URL: https:// → wss://, http:// → ws://; anything else is refused."""
    parts = urlsplit(url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise UsageError(f"not a session stream URL: {url!r} (want wss://host:port/api/v1/sessions/ID/stream)")
    return urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))


def origin_of(url: str) -> str:
    """The console origin matching a stream URL (what a browser on the console would send)."""
    parts = urlsplit(url)
    return urlunsplit(("https" if parts.scheme == "wss" else "http", parts.netloc, "", "", ""))


def read_token(token_file: Path | None, environ: Mapping[str, str]) -> str | None:
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the token file: {exc}") from exc
        if not token:
            raise UsageError(f"{token_file} is empty")
        return token
    return environ.get(TOKEN_ENV) or None


def ssl_context_for(url: str, args: argparse.Namespace) -> ssl.SSLContext | None:
    """The org-CA-only client context for wss:// (hostname checked, TLS 1.3); None for ws://."""
    if not url.startswith("wss:"):
        return None
    ca: Path | None = args.ca
    if ca is None and (args.config is not None or args.data is not None):
        ca = Path(server_config(args).pki_path) / "ca.pem"
    if ca is None:
        raise UsageError("wss:// needs the org CA: give --ca FILE (or --data/--config on the server)")
    if not ca.is_file():
        raise UsageError(f"no CA certificate at {ca}")
    return tls.agent_client_context(ca, None, None)


# --- watching ---------------------------------------------------------------------------------


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


def _refusal(exc: InvalidStatus) -> str:
    """The server's ``{"error": {...}}`` body of a refused upgrade, in one line."""
    status = exc.response.status_code
    try:
        error = json.loads(exc.response.body or b"{}")["error"]
        return f"{status} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}"


def _run(args: argparse.Namespace) -> int:
    try:
        url = stream_url(args.url)
        context = ssl_context_for(url, args)
        token = read_token(args.token_file, os.environ)
        if args.after < 1:
            raise UsageError("--after must be at least 1")
    except UsageError as exc:
        print(f"helpline: {exc}", file=sys.stderr)
        return 2
    headers = {"Origin": args.origin or origin_of(url)}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        asyncio.run(watch(url, ssl_context=context, headers=headers, seconds=args.seconds, snapshot=args.snapshot,
                          after=args.after, as_json=args.json))
    except InvalidStatus as exc:
        print(f"helpline: the server refused the stream: {_refusal(exc)}", file=sys.stderr)
        return 1
    except ConnectionError as exc:  # before OSError, its base class
        print(f"helpline: {exc}", file=sys.stderr)
        return 1
    except (InvalidURI, InvalidHandshake, OSError, websockets.ConnectionClosedError) as exc:
        print(f"helpline: cannot watch {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
