"""The seam between the screen session and the toolkit: a tunnel that keeps toolkit messages for itself.

The screen session reads its tunnel through :class:`ToolkitTunnel`, which hands every toolkit
message (chunks by their magic byte, text the toolkit decoder accepts) to the
:class:`~agent.toolkit.session.Toolkit` and returns only the rest, so the screen code needs no
change and never sees a file byte.

A transfer must not stall typing, so both directions give the screen precedence:

* reading: toolkit messages go, in order, to a worker task (bounded queue), and the screen's acks
  and input behind a chunk are returned at once instead of after the chunk's disk write;
* writing: file chunks go through :class:`PrioritySender`, which sends one only when no other
  message (a screen frame, an ack, a chat line) waits for the tunnel; the fetch's window bounds
  the file bytes in flight (:data:`agent.toolkit.session.FETCH_WINDOW`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import cast

from protocol import toolkit as tk

from ..consent.guard import PromptGuard
from ..screen.tunnel import Tunnel, send_all
from .caps import ToolkitCaps
from .priority import QUIET_S, PrioritySender
from .session import Approve, DeviceSide, Toolkit

#: The toolkit's transfer messages (acks, start/end…): sent first, but they are no screen traffic to make room for.
_FILE_PREFIX = '{"type":"file.'
#: Toolkit messages read but not yet handled (a full queue makes the reader wait: backpressure on the tunnel).
INBOX_MESSAGES = 64
#: Screen text that is never the toolkit's (an exact tag: the closing quote is part of it): returned without
#: trying the toolkit's decoder, which would build and drop a ToolkitProtocolError for every ack and keystroke.
_SCREEN_PREFIXES = ('{"type":"ack"', '{"type":"input.')


#: Why the toolkit is off when the person is there but their session window cannot show it.
UNSEEN_REASON = "this desktop's session window cannot show it to the person (native Wayland indicator)"


def seen_by_device(caps: ToolkitCaps | None, indicator: object | None) -> tuple[ToolkitCaps | None, DeviceSide | None]:
    """The caps a session may use given its indicator, and the indicator's device side (chat window, notes).

    An attended session whose indicator says it cannot show the toolkit (``shows_toolkit = False``: the
    zenity window under Wayland, no chat, transfer list or notes) would let chat, files, clipboard and
    the shell happen with nobody at the device seeing them, so they are refused with :data:`UNSEEN_REASON`.
    An unattended session's caps are the signed grant's, unchanged: nobody is expected to watch them.
    """
    device = cast(DeviceSide, indicator) if hasattr(indicator, "user_lines") else None
    if caps is None or caps.unattended or getattr(indicator, "shows_toolkit", True):
        return caps, device
    refused = dict(caps.refused)
    refused.update({cap: UNSEEN_REASON for cap in caps.allowed})
    return ToolkitCaps(frozenset(), 0, refused, (), unattended=caps.unattended, root_shell=False,
                       shell_idle_s=caps.shell_idle_s), None


class ToolkitTunnel:
    """``tunnel`` minus the toolkit's messages, which ``toolkit`` answers (in a worker, in order)."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.inner = tunnel
        self.sender = PrioritySender(tunnel.send, quiet_s=QUIET_S, send_many=self._send_inner_many)
        self.toolkit: Toolkit | None = None
        self._inbox: asyncio.Queue[tk.ToolkitAny | bytes] = asyncio.Queue(INBOX_MESSAGES)
        self._worker: asyncio.Task[None] | None = None

    async def send(self, data: str | bytes, /) -> None:
        await self.sender.send(data)

    async def send_many(self, messages: Sequence[str | bytes], /) -> None:
        await self.sender.send_many(messages)

    async def _send_inner_many(self, messages: Sequence[str | bytes]) -> None:
        await send_all(self.inner, messages)

    async def _send_bytes(self, data: bytes) -> None:
        await self.sender.send_bulk(data)

    async def _send_text(self, data: str) -> None:
        await self.sender.send(data, screen=not data.startswith(_FILE_PREFIX))

    def start(self, toolkit: Toolkit) -> None:
        self.toolkit = toolkit
        self._worker = asyncio.ensure_future(self._work(toolkit))

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def _work(self, toolkit: Toolkit) -> None:
        while True:
            item = await self._inbox.get()
            if isinstance(item, bytes):
                await self.sender.quiet()  # a chunk written (and acked) while a screen update is on its way competes
                await toolkit.on_binary(item)
            else:
                await toolkit.on_text(item)

    async def recv(self) -> str | bytes:
        while True:
            data = await self.inner.recv()
            if self._worker is not None and self._worker.done() and not self._worker.cancelled():
                self._worker.result()  # the toolkit failed (its tunnel closed, usually): end the session too
            toolkit = self.toolkit
            if toolkit is None:
                return data
            if isinstance(data, (bytes, bytearray, memoryview)):
                if tk.is_chunk(data):
                    await self._inbox.put(bytes(data))
                    continue
                return data
            if data.startswith(_SCREEN_PREFIXES):
                return data
            try:
                message = tk.decode_text(data)
            except tk.ToolkitProtocolError:
                return data  # the screen session's (or garbage it answers itself)
            if type(message) not in toolkit.handlers:
                return data  # an agent → viewer kind: the screen session answers it as invalid
            await self._inbox.put(message)


#: How long the device user has to answer a file request (no answer = Deny).
APPROVE_TIMEOUT_S = 60.0


def _asking(device: DeviceSide, gate: PromptGuard | None, timeout_s: float = APPROVE_TIMEOUT_S) -> Approve:
    """Ask the person at the device about a fetch, with the technician's remote input suspended meanwhile."""

    async def approve(path: str) -> bool:
        with gate.showing() if gate is not None else contextlib.nullcontext():
            return await device.approve_fetch(path, timeout_s)

    return approve


@contextlib.asynccontextmanager
async def toolkit_tunnel(tunnel: Tunnel, caps: ToolkitCaps | None, *, technician: str = "",
                         folder: Path | None = None, home: Path | None = None, approve: Approve | None = None,
                         device: DeviceSide | None = None, gate: PromptGuard | None = None,
                         approve_timeout_s: float = APPROVE_TIMEOUT_S) -> AsyncIterator[Tunnel]:
    """``tunnel`` with the toolkit of ``caps`` on it (None: the tunnel as it is), closed on exit; ``device`` is
    the indicator with its chat window (None: nobody at the device sees the toolkit)."""
    if caps is None:
        yield tunnel
        return
    wrapped = ToolkitTunnel(tunnel)
    if approve is None and device is not None:
        approve = _asking(device, gate)
    toolkit = Toolkit(caps, wrapped._send_text, wrapped._send_bytes, technician=technician, folder=folder,
                      home=home, approve=approve, device=device)
    wrapped.start(toolkit)
    watchers = [asyncio.ensure_future(toolkit.user_chat()), asyncio.ensure_future(toolkit.device_clipboard()),
                asyncio.ensure_future(toolkit.user_folders())] if device is not None else []
    try:
        await toolkit.start()
        yield wrapped
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        if device is not None:
            with contextlib.suppress(OSError, RuntimeError):
                await device.watch_clipboard(False)
        await wrapped.stop()
        await toolkit.close()
