"""An update's messages go down the tunnel's layers in one call and leave in one socket write.

Over a real TLS websocket (the agent's tunnel is one): :func:`agent.ws_batch.send_frames` keeps
each message its own websocket message, in order and with its type, but writes them with one
``transport.write``; the shell and toolkit wrappers hand a batch on as one call; the toolkit's
reader returns screen acks and input without running its own decoder on them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from agent.screen.tunnel import send_all
from agent.shell.tunnel import shell_tunnel
from agent.toolkit.caps import ToolkitCaps
from agent.toolkit.tunnel import toolkit_tunnel
from agent.ws_batch import send_frames
from certs import tls
from protocol import stream
from protocol import toolkit as tk
from tests.harness import make_pki

MESSAGES: list[str | bytes] = [b"\xa1" + bytes(range(40)), '{"type":"stats"}', b"x" * 70_000, b"", "\u00e9t\u00e9"]


class _Recorder:
    """An in-memory tunnel that records how it was called (``send_many`` optional)."""

    def __init__(self, incoming: Sequence[str | bytes] = (), *, batches: bool = True) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.incoming = list(incoming)
        if batches:
            self.send_many = self._send_many

    async def send(self, data: str | bytes, /) -> None:
        self.calls.append(("send", data))

    async def _send_many(self, messages: Sequence[str | bytes], /) -> None:
        self.calls.append(("send_many", list(messages)))

    async def recv(self) -> str | bytes:
        if not self.incoming:
            await asyncio.Event().wait()
        return self.incoming.pop(0)


async def test_send_frames_writes_a_batch_once_over_tls(tmp_path: Path) -> None:
    """Five messages (text, binary, one over 64 kB, an empty one) arrive intact, in order, from one write."""
    pki = make_pki(tmp_path)
    received: list[str | bytes] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            received.append(message)
            if len(received) == 2 * len(MESSAGES):
                done.set()

    server_ctx = tls.console_listener_context(pki / "server.pem", pki / "server.key")
    client_ctx = tls.agent_client_context(pki / "ca.pem", None, None)
    async with serve(handler, "127.0.0.1", 0, ssl=server_ctx, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"wss://localhost:{port}", ssl=client_ctx, compression=None) as ws:
            writes: list[int] = []
            transport: Any = ws.transport
            real_write = transport.write

            def counting_write(data: bytes) -> None:
                writes.append(len(data))
                real_write(data)

            transport.write = counting_write
            await send_frames(ws, MESSAGES)
            assert len(writes) == 1  # one TLS write for the five frames
            await ws.send("after")  # the connection goes on as usual afterwards
            assert len(writes) == 2
            await send_frames(ws, MESSAGES[:-1])
            await asyncio.wait_for(done.wait(), 30)
    assert received[:len(MESSAGES)] == MESSAGES
    assert received[len(MESSAGES)] == "after"
    assert received[len(MESSAGES) + 1:] == MESSAGES[:-1]


async def test_send_all_falls_back_to_one_send_per_message() -> None:
    """A tunnel without ``send_many`` (the helper's relay pipe, a test pair) gets every message, in order."""
    plain = _Recorder(batches=False)
    await send_all(plain, MESSAGES)
    assert plain.calls == [("send", m) for m in MESSAGES]
    batching = _Recorder()
    await send_all(batching, MESSAGES)
    assert batching.calls == [("send_many", MESSAGES)]


async def test_shell_and_toolkit_wrappers_pass_a_batch_as_one_call() -> None:
    """screen → shell tunnel → toolkit tunnel → tunnel: one ``send_many`` at the bottom, nothing split."""
    inner = _Recorder()
    caps = ToolkitCaps(allowed=frozenset({"chat"}))
    async with toolkit_tunnel(inner, caps) as wrapped, shell_tunnel(wrapped, allowed=False) as shelled:
        inner.calls.clear()  # the toolkit's caps message
        await send_all(shelled, MESSAGES)
        await shelled.send("single")
    assert inner.calls == [("send_many", MESSAGES), ("send", "single")]


async def test_toolkit_reader_skips_its_decoder_for_acks_and_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Acks and input go straight to the screen; a chat line still goes to the toolkit."""
    ack = stream.encode_text(stream.Ack(seq=7))
    key = stream.encode_text(stream.InputKey(code="KeyA", action="down"))
    chat = tk.encode_text(tk.ChatSend(text="hello"))
    inner = _Recorder([ack, key, chat, ack])
    decoded: list[str | bytes] = []
    real_decode = tk.decode_text

    def counting_decode(data: str | bytes) -> tk.ToolkitAny:
        decoded.append(data)
        return real_decode(data)

    monkeypatch.setattr(tk, "decode_text", counting_decode)
    caps = ToolkitCaps(allowed=frozenset({"chat"}))
    async with toolkit_tunnel(inner, caps) as wrapped:
        got = [await asyncio.wait_for(wrapped.recv(), 10) for _ in range(3)]
    assert got == [ack, key, ack]  # the chat line was the toolkit's
    assert decoded == [chat]
