"""``helpline viewer URL`` — watch a session stream from a terminal (admins, smoke checks).

Connects the reference :class:`~agent.viewer.Viewer` to a session's console stream
(``wss://server:8444/api/v1/sessions/{id}/stream``, or a direct ``ws://`` tunnel),
prints one stats line per second, and can save the decoded framebuffer as a PNG after N
updates. ``wss://`` is verified against the org CA only (``--ca``, or the server's PKI
found through ``--config``/``--data``); verification is never turned off. The API token
is read from ``$HELPLINE_TOKEN`` or ``--token-file`` (never from the command line, where
``ps`` would show it) and sent as ``Authorization: Bearer``; the Origin header is the
console's own, which the stream's Origin check requires.

A session live on another node than the one in the URL (more than one node, issue 20): the session's
``node_url`` names that node; the viewer asks the URL's node for a single-use stream ticket and streams
from the other node with it (verified against the same org CA; the API token goes only to the URL's node).

With ``--say``/``--send``/``--fetch``/``--paste``/``--clipboard`` it uses the session's in-session
toolkit instead (:mod:`.viewer_toolkit`), so chat, file transfer and clipboard can be scripted.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from common.origins import STREAM_PATH, origin_of

from .common import add_server_options, server_config

__all__ = ["UsageError", "follow_node", "origin_of", "register", "stream_url"]

TOKEN_ENV = "HELPLINE_TOKEN"  # noqa: S105 - the name of a variable, not a secret


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
    toolkit = parser.add_argument_group("in-session toolkit (instead of watching; in the order below)")
    toolkit.add_argument("--say", action="append", default=[], metavar="TEXT", help="send a chat line")
    toolkit.add_argument("--send", action="append", default=[], type=Path, metavar="FILE",
                         help="send a file to the device user's Downloads")
    toolkit.add_argument("--fetch", action="append", default=[], metavar="PATH",
                         help="fetch a file from the device (attended: the user is asked)")
    toolkit.add_argument("--fetch-dir", type=Path, default=Path("."), metavar="DIR", help="where fetched files go")
    toolkit.add_argument("--paste", metavar="TEXT", help="put TEXT on the device's clipboard")
    toolkit.add_argument("--clipboard", action="store_true",
                         help="print the device's clipboard each time it changes (until --seconds)")
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
    from certs import tls

    return tls.agent_client_context(ca, None, None)


def _api(method: str, url: str, context: ssl.SSLContext | None, headers: Mapping[str, str]) -> dict[str, Any]:
    """One JSON call to the console API (no proxy: as the stream's websocket; TLS as ``context`` says)."""
    import json
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method,  # noqa: S310 - https/http only (stream_url)
                                     headers={**headers, "Content-Type": "application/json"})
    with opener.open(request, timeout=15) as response:
        answer = json.loads(response.read(256 * 1024))
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")
    return answer


def follow_node(url: str, context: ssl.SSLContext | None, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The session live on another node: that node's stream URL with a ticket, and this console's Origin.

    When the URL's node does not say the session is elsewhere (one node, an old server, a refusal) the URL is
    left as it is: the stream's own answer then says why it cannot be watched. When it does, but gives no
    usable ticket (refused, or an answer without a ``wss://`` URL on that node and an origin), UsageError.
    """
    parts = urlsplit(url)
    found = STREAM_PATH.match(parts.path)
    if found is None or parts.query:
        return url, headers
    base = urlunsplit(("https" if parts.scheme == "wss" else "http", parts.netloc, "", "", ""))
    calls = {"Authorization": headers["Authorization"]}
    session = f"{base}/api/v1/sessions/{found.group(1)}"
    try:
        node_url = _api("GET", session, context, calls).get("node_url")
        if not isinstance(node_url, str) or origin_of(stream_url(node_url)) == origin_of(url):
            return url, headers
    except (OSError, ValueError, UsageError):
        return url, headers
    try:
        ticket = _api("POST", f"{session}/stream-ticket", context, calls)
        other, origin = ticket.get("url"), ticket.get("origin")
        if not isinstance(other, str) or not isinstance(origin, str) or len(other) > 4096 or len(origin) > 512:
            raise ValueError("no stream url and origin in the answer")
        other = stream_url(other)
        if origin_of(other) != origin_of(stream_url(node_url)):
            raise ValueError(f"the ticket's url {other!r} is not on node {node_url!r}")
    except (OSError, ValueError, UsageError) as exc:
        raise UsageError(f"the session is live on {node_url}, but no stream ticket was had from "
                         f"{base}: {exc}") from exc
    print(f"helpline: the session is live on node {ticket.get('node')} ({node_url}); streaming from there",
          file=sys.stderr)
    return other, {"Origin": origin}


def _steps(args: argparse.Namespace) -> Any:
    from .viewer_toolkit import Steps

    return Steps(say=list(args.say), send=list(args.send), fetch=list(args.fetch), fetch_dir=args.fetch_dir,
                 paste=args.paste, clipboard=bool(args.clipboard))


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
            url, headers = follow_node(url, context, headers)
        except UsageError as exc:
            print(f"helpline: {exc}", file=sys.stderr)
            return 1
    steps = _steps(args)
    if steps.any():
        import asyncio

        from . import viewer_toolkit

        return asyncio.run(viewer_toolkit.run_steps(url, steps, ssl_context=context, headers=headers,
                                                    seconds=args.seconds, as_json=args.json))
    from . import viewer_watch  # numpy, websockets and the agent's decoder: only when watching

    return viewer_watch.run(url, ssl_context=context, headers=headers, seconds=args.seconds, snapshot=args.snapshot,
                            after=args.after, as_json=args.json)
