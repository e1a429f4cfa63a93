"""The viewer's side of the remote shell, on top of the reference viewer (:class:`agent.viewer.Viewer`).

Used by the tests and ``benchmarks/shell.py``: it takes the shell's messages off the session
stream (terminal bytes into ``output``, ``shell.*`` text into ``messages``) and hands the rest
to the screen viewer, so screen updates are still acked and the session behaves as in a console.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from protocol import shell as sh

from ..viewer import Viewer


class ShellViewer(Viewer):
    """A session viewer that can also type into the device's shell."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.output = bytearray()
        self.messages: list[sh.ShellAny] = []
        #: (arrival time, total output bytes so far) per shell data message, for the benchmark.
        self.output_arrivals: list[tuple[float, int]] = []
        self._shell_changed = asyncio.Event()

    async def _on_binary(self, data: bytes, now: float) -> None:
        if sh.is_data(data):
            self.output += sh.unpack_data(data)
            self.output_arrivals.append((now, len(self.output)))
            self._shell_changed.set()
            return
        await super()._on_binary(data, now)

    def _on_text(self, data: str) -> None:
        if data.startswith(sh.TEXT_PREFIX):
            try:
                self.messages.append(sh.decode_text(data))
            except sh.ShellProtocolError:
                self.stats.bad_messages += 1
            self._shell_changed.set()
            return
        super()._on_text(data)

    async def __aenter__(self) -> ShellViewer:
        await self.connect()
        return self

    async def shell_send(self, message: sh.ShellAny) -> None:
        await self._ws.send(sh.encode_text(message))

    async def keys(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        for at in range(0, len(data), sh.MAX_DATA):
            await self._ws.send(sh.pack_data(data[at : at + sh.MAX_DATA]))

    def of(self, kind: type) -> list[sh.ShellAny]:
        return [m for m in self.messages if isinstance(m, kind)]

    async def until(self, check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
        """Wait until ``check()`` holds (re-checked on every shell message), or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while not check():
            self._shell_changed.clear()
            left = deadline - time.monotonic()
            if left <= 0 or self.closed.is_set():
                raise TimeoutError(f"shell: {what or 'condition'} not met; last output "
                                   f"{bytes(self.output[-300:])!r}, messages {self.messages[-3:]}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._shell_changed.wait(), min(left, 1.0))
