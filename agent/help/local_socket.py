"""Direct mode: ``<state>/help.sock``, where ``helpline help`` reaches the agent it runs beside.

The state directory is 0700 and the socket 0600, so only the agent's own user (and root) can
connect; the kernel's SO_PEERCRED is checked again on every connection (the agent's uid or
root), and the caller is named by that uid — what a caller writes cannot make it someone else.
Lines are at most :data:`.wire.MAX_LINE` bytes; a line that is no valid call ends the connection.
In service mode the session helpers carry these calls instead (:mod:`.helper_socket`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .desk import Caller, HelpDesk
from .endpoint import CallerSession
from .wire import MAX_LINE, AgentMessage, Failed, WireError, decode_call, encode

log = logging.getLogger(__name__)

SOCKET_NAME = "help.sock"


def peer_uid(sock: socket.socket) -> int:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


async def serve_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, desk: HelpDesk,
                      caller: Caller) -> None:
    """One caller's connection: decode each line, answer through a :class:`CallerSession`."""
    lock = asyncio.Lock()

    async def send(message: AgentMessage) -> None:
        async with lock:
            writer.write(encode(message))
            await writer.drain()

    session = CallerSession(desk, caller, send)
    try:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return
            except asyncio.LimitOverrunError:
                await send(Failed(call=0, reason=f"a line longer than {MAX_LINE} bytes"))
                return
            try:
                session.receive(decode_call(line))
            except WireError as exc:
                await send(Failed(call=0, reason=f"not a valid call: {exc}"[:4000]))
                return
    except (ConnectionError, OSError):
        return
    finally:
        await session.close()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()



async def listen_private(path: Path, accept: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                      Awaitable[None]]) -> asyncio.Server:
    """A Unix socket at ``path`` that only its owner's user can open (0600), listening for ``accept``.

    The narrow umask is held only around ``bind()``, with no ``await`` inside: the umask is
    process-wide, and other tasks creating files meanwhile (another agent in the same process, a
    browser a test starts) must not inherit it.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a socket left by a crash: binding needs the name free
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return await asyncio.start_unix_server(accept, sock=sock, limit=MAX_LINE)


class LocalHelpSocket:
    """The direct-mode endpoint (an agent background task)."""

    def __init__(self, desk: HelpDesk, path: Path) -> None:
        self.desk, self.path = desk, path
        self.listening = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    async def serve(self, _client: Any = None) -> None:
        try:
            server = await listen_private(self.path, self._accept)
        except OSError as exc:  # e.g. a state path too long for a Unix socket: the agent runs on without it
            log.warning("help socket %s not available: %s; 'helpline help' cannot reach this agent", self.path, exc)
            return
        self.listening.set()
        log.info("help socket listening", extra={"socket": str(self.path)})
        try:
            await asyncio.Future()
        finally:
            server.close()
            for writer in list(self._writers):  # the agent stops: its callers learn it at once
                writer.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.listening.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = peer_uid(writer.get_extra_info("socket"))
        if uid not in (os.getuid(), 0):
            log.warning("help socket: refused uid %d", uid)
            writer.close()
            return
        self._writers.add(writer)
        try:
            await serve_lines(reader, writer, self.desk, Caller(uid=uid, user=user_name(uid)))
        finally:
            self._writers.discard(writer)
