"""The shell's seam on the session tunnel: a tunnel that keeps ``shell.*`` messages for itself.

Like :class:`agent.toolkit.tunnel.ToolkitTunnel`: the screen session (and the toolkit under it)
reads through :class:`ShellTunnel`, which hands binary ``0xC1`` messages and ``shell.*`` text to
the :class:`~agent.shell.session.Shell` and returns the rest. Both write under one lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from protocol import shell as sh

from ..screen.tunnel import Tunnel, send_all
from ..toolkit.caps import ToolkitCaps
from .session import IDLE_TIMEOUT_S, Shell


class ShellTunnel:
    def __init__(self, tunnel: Tunnel) -> None:
        self.inner = tunnel
        self._lock = asyncio.Lock()
        self.shell: Shell | None = None

    async def send(self, data: str | bytes, /) -> None:
        async with self._lock:
            await self.inner.send(data)

    async def send_many(self, messages: Sequence[str | bytes], /) -> None:
        """An update's messages through the lock once, on to the inner tunnel in one call."""
        async with self._lock:
            await send_all(self.inner, messages)

    async def recv(self) -> str | bytes:
        while True:
            data = await self.inner.recv()
            shell = self.shell
            if shell is None:
                return data
            if isinstance(data, (bytes, bytearray, memoryview)):
                if sh.is_data(data):
                    await shell.on_binary(bytes(data))
                    continue
                return data
            if not data.startswith(sh.TEXT_PREFIX):
                return data
            try:
                message = sh.decode_text(data)
            except sh.ShellProtocolError as exc:
                await self.send(sh.encode_text(sh.Error(code="shell_invalid", message=exc.message[:500])))
                continue
            await shell.on_text(message)


@contextlib.asynccontextmanager
async def shell_tunnel(tunnel: Tunnel, *, allowed: bool, refused: str = "", root_allowed: bool = False,
                       user: str | None = None, note: Callable[[str], Awaitable[None]] | None = None,
                       idle_timeout_s: float = IDLE_TIMEOUT_S) -> AsyncIterator[Tunnel]:
    """``tunnel`` with the session's shell on it; any shell still running is hung up on exit."""
    wrapped = ShellTunnel(tunnel)

    async def send_text(text: str) -> None:
        await wrapped.send(text)

    async def send_bytes(data: bytes) -> None:
        await wrapped.send(data)

    shell = Shell(send_text, send_bytes, allowed=allowed, refused=refused, root_allowed=root_allowed, user=user,
                  note=note, idle_timeout_s=idle_timeout_s)
    wrapped.shell = shell
    try:
        yield wrapped
    finally:
        await shell.close()


@contextlib.asynccontextmanager
async def session_shell(tunnel: Tunnel, caps: ToolkitCaps | None, *, user: str | None = None,
                        note: Callable[[str], Awaitable[None]] | None = None) -> AsyncIterator[Tunnel]:
    """The shell a session's caps allow (none: every ``shell.open`` is refused saying why)."""
    if caps is None:
        allowed, refused, root, idle = False, "the shell is not part of this session", False, IDLE_TIMEOUT_S
    else:
        allowed, refused, root = "shell" in caps.allowed, caps.refused.get("shell", ""), caps.root_shell
        idle = caps.shell_idle_s
    async with shell_tunnel(tunnel, allowed=allowed, refused=refused, root_allowed=root, user=user,
                            note=note, idle_timeout_s=idle) as wrapped:
        yield wrapped
