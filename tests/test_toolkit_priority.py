"""A file transfer never stalls typing: interactive messages overtake file chunks at every queue of the tunnel.

Units for the three places that used to be one FIFO — the relay's queue per direction
(:mod:`server.sessions.lanes`), a tunnel's writer (:mod:`agent.toolkit.priority`) and the agent's
reader (:class:`agent.toolkit.tunnel.ToolkitTunnel`). benchmarks/transfer.py measures the whole.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.toolkit.caps import ToolkitCaps
from agent.toolkit.priority import PrioritySender
from agent.toolkit.tunnel import toolkit_tunnel
from protocol import stream
from protocol import toolkit as tk
from server.sessions.lanes import Lanes, is_bulk

CHUNK = tk.pack_chunk(1, 0, b"x" * 1000)
ACK = stream.encode_text(stream.Ack(seq=3))


async def test_lanes_give_interactive_messages_first() -> None:
    """Queued chunks and file.* texts wait behind a later screen ack; each lane keeps its own order."""
    lanes = Lanes(16)
    offer = tk.encode_text(tk.FileOffer(transfer=1, name="a", size=1000, sha256="0" * 64))
    await lanes.put((False, offer))
    await lanes.put((True, CHUNK))
    await lanes.put((False, ACK))
    await lanes.put((True, b"\xa1screen"))
    await lanes.put(None)
    got = [await lanes.get() for _ in range(5)]
    assert got == [(False, ACK), (True, b"\xa1screen"), None, (False, offer), (True, CHUNK)]
    assert is_bulk(True, CHUNK) and is_bulk(False, offer) and not is_bulk(False, ACK)
    assert not is_bulk(False, tk.encode_text(tk.ChatSend(text="hi")))


async def test_lanes_get_waits_for_either_lane() -> None:
    """An empty queue's reader wakes for a message put in either lane."""
    lanes = Lanes(4)
    waiting = asyncio.ensure_future(lanes.get())
    await asyncio.sleep(0)
    await lanes.put((True, CHUNK))
    assert await asyncio.wait_for(waiting, 2) == (True, CHUNK)


async def test_priority_sender_sends_chunks_only_when_nothing_else_waits() -> None:
    """While a chunk is being written, an ack and a frame that arrive go before the next chunk."""
    written: list[str] = []
    gate = asyncio.Event()

    async def slow_send(data: str | bytes) -> None:
        written.append(data if isinstance(data, str) else "chunk")
        if len(written) == 1:
            await gate.wait()  # the first chunk's write takes a while (a full socket buffer)

    sender = PrioritySender(slow_send)
    chunks = asyncio.ensure_future(asyncio.gather(sender.send_bulk(b"1"), sender.send_bulk(b"2")))
    await asyncio.sleep(0)
    interactive = asyncio.ensure_future(asyncio.gather(sender.send("ack"), sender.send("frame")))
    await asyncio.sleep(0)
    gate.set()
    await asyncio.wait_for(asyncio.gather(chunks, interactive), 2)
    assert written == ["chunk", "ack", "frame", "chunk"]


class _Pipe:
    """An in-memory tunnel: what the viewer sent, and what the agent sent back."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.sent: list[str | bytes] = []

    async def send(self, data: str | bytes, /) -> None:
        self.sent.append(data)

    async def recv(self) -> str | bytes:
        return await self.incoming.get()


async def test_agent_reader_returns_screen_messages_before_chunks_are_written(tmp_path: Path) -> None:
    """An ack behind chunks reaches the screen session while the chunks' disk writes are still pending."""
    folder = tmp_path / "Downloads"
    pipe = _Pipe()
    caps = ToolkitCaps(frozenset({"files"}), 10_000_000)
    async with toolkit_tunnel(pipe, caps, folder=folder) as wrapped:
        toolkit = wrapped.toolkit  # type: ignore[attr-defined]
        release = asyncio.Event()
        handled: list[int] = []

        async def slow_binary(data: bytes) -> None:
            await release.wait()
            handled.append(len(data))

        toolkit.on_binary = slow_binary
        for _ in range(3):
            pipe.incoming.put_nowait(CHUNK)
        pipe.incoming.put_nowait(ACK)
        assert await asyncio.wait_for(wrapped.recv(), 2) == ACK
        assert handled == []  # the chunks are still waiting for the "disk"
        release.set()
        for _ in range(100):
            if len(handled) == 3:
                break
            await asyncio.sleep(0.01)
        assert handled == [len(CHUNK)] * 3  # in order, all of them


async def test_chunks_wait_a_quiet_period_after_screen_traffic_only() -> None:
    """After a screen message a chunk waits quiet_s (capped); after a transfer's own ack it does not wait."""
    sent: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()

    async def record(data: str | bytes) -> None:
        sent.append((data if isinstance(data, str) else "chunk", loop.time()))

    sender = PrioritySender(record, quiet_s=0.04)
    await sender.send("frame")
    await sender.send_bulk(b"1")
    assert sent[1][1] - sent[0][1] >= 0.035  # waited for the quiet period
    await sender.send('{"type":"file.ack"}', screen=False)
    before = loop.time()
    await sender.quiet()
    assert loop.time() - before < 0.03  # a transfer's own message makes no room for itself
