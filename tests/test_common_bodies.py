"""common/bodies.py: a body read to its end within a limit (the API middleware and the signer link use it).

Driven through the standard library's real ``asyncio.StreamReader`` (fed in pieces, as a slow peer's
bytes arrive); the callers' own end-to-end tests cover aiohttp's reader (tests/test_device_recovery.py
'slow pieces', tests/test_pki_delegation_node_link.py).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from common.bodies import read_capped


class Refused(Exception):
    """The caller's own error."""


async def test_pieces_are_read_to_the_end_and_the_limit_is_inclusive() -> None:
    """Three pieces arriving over time come back whole; exactly ``limit`` bytes is accepted."""
    stream = asyncio.StreamReader()

    async def slow_peer() -> None:
        for piece in (b"ab", b"cd", b"ef"):
            stream.feed_data(piece)
            await asyncio.sleep(0)  # lets the reader take what is buffered: read(n) returns short
        stream.feed_eof()

    feeder = asyncio.create_task(slow_peer())
    assert await read_capped(stream, 6, lambda: Refused("too large")) == b"abcdef"
    await feeder
    empty = asyncio.StreamReader()
    empty.feed_eof()
    assert await read_capped(empty, 6, lambda: Refused("too large")) == b""


async def test_one_byte_over_raises_the_callers_error_without_reading_on() -> None:
    """``limit + 1`` bytes raise the caller's exception; what follows in the stream is left unread."""
    stream = asyncio.StreamReader()
    stream.feed_data(b"x" * 5)
    stream.feed_data(b"y" * 1000)
    with pytest.raises(Refused, match="too large"):
        await read_capped(stream, 4, lambda: Refused("too large"))
    assert len(await stream.read(2000)) == 1000  # at most limit + 1 bytes were taken


def test_importing_it_does_not_import_aiohttp() -> None:
    """``common/`` is imported by the agent: the helper must not pull aiohttp in."""
    code = "import sys, common.bodies; sys.exit('aiohttp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
