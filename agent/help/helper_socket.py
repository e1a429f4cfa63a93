"""Service mode: the session helper's per-user socket, relayed to the root service.

``helpline help`` run by the user connects to ``$XDG_RUNTIME_DIR/helpline-help.sock`` (the
user's runtime directory is 0700; the socket 0600, and SO_PEERCRED must be the helper's own uid).
Each connection gets a channel id; its lines go to the service as ``help.call`` frames over the
desktop socket and the service's ``help.reply`` frames come back to it. The helper decodes
nothing here: the service validates every call and acts for the helper's kernel-checked user.
When the service goes away, every window's connection is closed (it says so and can retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from protocol.desktop import HelpCall, HelpClosed, HelpReply

from .local_socket import listen_private, peer_uid
from .wire import Failed, encode

log = logging.getLogger(__name__)

SOCKET_NAME = "helpline-help.sock"
#: Windows relayed at once (the service allows as many per helper).
MAX_CHANNELS = 16
#: How long a new window waits for the helper to be (re)connected to the service.
SERVICE_WAIT_S = 10.0


def default_path() -> Path | None:
    """``$XDG_RUNTIME_DIR/helpline-help.sock``, if that directory is this user's own and private; else None."""
    runtime = Path(os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}")
    try:
        info = runtime.stat()
    except OSError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return runtime / SOCKET_NAME


class HelpRelay:
    """Accepts the user's Get help windows and relays their lines to the service."""

    def __init__(self, path: Path, send: Callable[[Any], Awaitable[None]], connected: asyncio.Event) -> None:
        self.path, self._send, self._connected = path, send, connected
        self._channels: dict[str, asyncio.StreamWriter] = {}
        self._next = 0
        self.listening = asyncio.Event()

    async def serve(self) -> None:
        try:
            server = await listen_private(self.path, self._accept)
        except OSError as exc:
            log.warning("help socket %s not available: %s", self.path, exc)
            return
        self.listening.set()
        try:
            await asyncio.Future()
        finally:
            server.close()
            self.drop_all()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if peer_uid(writer.get_extra_info("socket")) != os.getuid() or len(self._channels) >= MAX_CHANNELS:
            writer.close()
            return
        try:  # the helper may be (re)connecting to the service right now
            await asyncio.wait_for(self._connected.wait(), SERVICE_WAIT_S)
        except TimeoutError:
            with contextlib.suppress(ConnectionError, OSError):
                writer.write(encode(Failed(call=0, reason="the Helpline agent service does not answer")))
                await writer.drain()
            writer.close()
            return
        self._next += 1
        channel = f"w{self._next}"
        self._channels[channel] = writer
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                await self._send(HelpCall(channel=channel, body=line))
        except (ConnectionError, OSError) as exc:
            log.info("help window relay ended: %s", exc)
        finally:
            if self._channels.pop(channel, None) is not None:
                with contextlib.suppress(ConnectionError, OSError):
                    await self._send(HelpClosed(channel=channel))
            writer.close()

    async def reply(self, message: HelpReply) -> None:
        writer = self._channels.get(message.channel)
        if writer is None:
            return
        try:
            writer.write(message.body if message.body.endswith(b"\n") else message.body + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            self._channels.pop(message.channel, None)

    def drop_all(self) -> None:
        """The service went away: every window's connection ends."""
        for writer in self._channels.values():
            writer.close()
        self._channels.clear()
