"""``helpline viewer`` following a session to another node (review findings 14, 15 of issue 20).

The origin helper is the server's own (one function, common/origins.py), so "same node" is decided alike;
an unexpected answer to the ticket request is a clear error, not a crash. A real HTTP server (stdlib, in a
thread) plays the URL's node.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from common import origins
from helpline.commands import viewer
from server.bus import nodes
from server.sessions import tickets


def test_one_origin_helper_and_stream_path_for_server_and_cli() -> None:
    assert viewer.origin_of is origins.origin_of is vars(nodes)["origin_of"] is vars(tickets)["origin_of"]
    assert vars(viewer)["STREAM_PATH"] is origins.STREAM_PATH is vars(tickets)["STREAM_PATH"]
    # The default port is not part of an origin: a URL naming :443 is the same node as one that does not.
    assert viewer.origin_of("wss://H.example:443/api/v1/sessions/s-1/stream") == "https://h.example"
    assert viewer.origin_of(viewer.stream_url("https://h.example")) == viewer.origin_of("wss://h.example:443/x")
    assert viewer.origin_of("ws://[::1]:80/") == "http://[::1]"


@pytest.fixture
def node() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A console answering GET …/sessions/ID with another node's URL and POST …/stream-ticket as told."""
    answers: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def _send(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(201 if self.command == "POST" else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send({"session_id": "s-1", "node_url": "http://127.0.0.2:9"})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self._send(answers.pop(0))

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.server_address[1]}/api/v1/sessions/s-1/stream", answers
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_an_unexpected_ticket_answer_is_a_clear_error(node: tuple[str, list[dict[str, Any]]]) -> None:
    url, answers = node
    headers = {"Origin": viewer.origin_of(url), "Authorization": "Bearer hl_x"}
    answers.extend([{"node": "c"},  # no url, no origin
                    {"url": "ftp://127.0.0.2:9/x", "origin": "http://127.0.0.1"},  # not a stream URL
                    {"url": "ws://evil.example/api/v1/sessions/s-1/stream?ticket=t", "origin": "http://x"}])
    for expected in ("no stream url and origin", "not a session stream URL", "is not on node"):
        with pytest.raises(viewer.UsageError, match=expected):
            viewer.follow_node(url, None, headers)
    answers.append({"url": "ws://127.0.0.2:9/api/v1/sessions/s-1/stream?ticket=t", "origin": "http://127.0.0.1:1",
                    "node": "c"})
    followed, sent = viewer.follow_node(url, None, headers)
    assert followed == "ws://127.0.0.2:9/api/v1/sessions/s-1/stream?ticket=t" and sent == {"Origin": "http://127.0.0.1:1"}
