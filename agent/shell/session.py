"""The remote shell of one session: answers ``shell.*`` messages and pumps the pty both ways.

It refuses what the session's caps do not allow (``shell`` missing from consent or grant, root
without ``allow_root_shell``) with ``shell.error``, whatever the technician asks. Output is read
as it comes (at most ``protocol.shell.MAX_DATA`` per message) and sent with the tunnel's own
back-pressure, so a ``cat`` of a big file never queues unbounded in the agent. A shell with
neither input nor output for ``idle_timeout_s`` (the device policy's ``shell_idle_timeout_s``) is
hung up; the relay applies the server's own limit and sends ``shell.close {idle}``, so the
stricter of the two ends an idle shell. Start, end, user and exit status are logged here and
reach the server's audit through the relay (``shell.opened``/``shell.exit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable

from protocol import shell as sh

from .pty import Pty, ShellRefused, resolve_user, set_size, spawn

log = logging.getLogger(__name__)

SendText = Callable[[str], Awaitable[None]]
SendBytes = Callable[[bytes], Awaitable[None]]
#: A shell with no byte either way for this long is hung up (the policy default; ``LocalPolicy.shell_idle_timeout_s``).
IDLE_TIMEOUT_S = 15 * 60.0


class Shell:
    """At most one pty at a time for one session, within what consent and policy allow."""

    def __init__(self, send_text: SendText, send_bytes: SendBytes, *, allowed: bool, refused: str = "",
                 root_allowed: bool = False, user: str | None = None,
                 note: Callable[[str], Awaitable[None]] | None = None,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._send_text, self._send_bytes = send_text, send_bytes
        self.allowed, self.refused, self.root_allowed = allowed, refused, root_allowed
        self.user = user
        self.note = note
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        self.pty: Pty | None = None
        self._pump: asyncio.Task[None] | None = None
        self.last_activity = clock()
        self._hangup_reason = ""

    async def _error(self, code: str, message: str) -> None:
        log.info("shell refused %s: %s", code, message)
        await self._send_text(sh.encode_text(sh.Error(code=code, message=message[:500])))

    async def on_text(self, message: sh.ShellAny) -> None:
        if isinstance(message, sh.Open):
            await self._open(message)
        elif isinstance(message, sh.Resize):
            if self.pty is not None:
                set_size(self.pty.master, message.cols, message.rows)
        elif isinstance(message, sh.Close):
            await self.close("idle timeout (server)" if message.idle else "closed by the technician")
        else:
            await self._error("shell_invalid", f"{type(message).__name__} is not a viewer message")

    async def on_binary(self, data: bytes) -> None:
        try:
            keys = sh.unpack_data(data)
        except sh.ShellProtocolError as exc:
            await self._error("shell_invalid", exc.message)
            return
        if self.pty is None:
            await self._error("no_shell", "no shell is running")
            return
        self.last_activity = self.clock()
        await _write_all(self.pty.master, keys)

    async def _open(self, message: sh.Open) -> None:
        if not self.allowed:
            await self._error("shell_refused", self.refused or "the shell is not part of this session")
            return
        if message.root and not self.root_allowed:
            await self._error("root_refused", "a root shell is off by this device's policy")
            return
        if self.pty is not None:
            await self._error("busy", "a shell is already running in this session")
            return
        try:
            user = resolve_user(self.user, root=message.root)
            self.pty = await asyncio.to_thread(spawn, user, message.cols, message.rows)
        except ShellRefused as exc:
            await self._error(exc.code, str(exc))
            return
        except OSError as exc:
            await self._error("spawn_failed", exc.strerror or str(exc))
            return
        pty = self.pty
        self.last_activity = self.clock()
        self._hangup_reason = ""
        log.info("shell started", extra={"shell_user": pty.user, "uid": pty.uid, "tty": pty.tty,
                                         "pid": pty.process.pid})
        await self._send_text(sh.encode_text(sh.Opened(user=pty.user, uid=pty.uid, tty=pty.tty,
                                                        pid=pty.process.pid, root=pty.uid == 0)))
        if self.note is not None:
            await self.note(f"The technician opened a command shell as {pty.user}")
        self._pump = asyncio.ensure_future(self._run(pty))

    async def _run(self, pty: Pty) -> None:
        loop = asyncio.get_running_loop()
        idle = asyncio.ensure_future(self._idle(pty))
        try:
            while True:
                try:
                    data = read_burst(pty.master)
                except OSError as exc:
                    if exc.errno != errno.EIO:  # EIO: every slave fd is closed (the shell and its jobs ended)
                        log.warning("shell pty read failed: %s", exc)
                    break
                if data is None:
                    break
                if not data:
                    ready = loop.create_future()
                    loop.add_reader(pty.master, ready.set_result, None)
                    try:
                        await ready
                    finally:
                        loop.remove_reader(pty.master)
                    continue
                self.last_activity = self.clock()
                try:
                    await self._send_bytes(sh.pack_data(data))
                except Exception as exc:
                    log.info("shell output undeliverable (%s); hanging up", type(exc).__name__)
                    self._hangup_reason = "session ended"
                    _hangup(pty)
                    break
        finally:
            idle.cancel()
        status = await asyncio.to_thread(_reap, pty)
        await self._finish(pty, status)

    async def _idle(self, pty: Pty) -> None:
        while True:
            left = self.last_activity + self.idle_timeout_s - self.clock()
            if left <= 0:
                self._hangup_reason = "idle timeout"
                _hangup(pty)
                return
            await asyncio.sleep(left)

    async def _finish(self, pty: Pty, status: int) -> None:
        if self.pty is pty:
            self.pty = None
        with contextlib.suppress(OSError):
            os.close(pty.master)
        reason = self._hangup_reason or "the shell exited"
        log.info("shell ended", extra={"shell_user": pty.user, "status": status, "reason": reason})
        with contextlib.suppress(OSError, RuntimeError, ConnectionError):
            await self._send_text(sh.encode_text(sh.Exit(status=max(-128, min(255, status)), reason=reason)))

    async def close(self, reason: str = "session ended") -> None:
        """Hang the shell up and wait for it (the session ends, or the technician closed it)."""
        pty, pump = self.pty, self._pump
        if pty is None or pump is None:
            return
        self._hangup_reason = reason
        _hangup(pty)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(pump), 5)


def read_burst(fd: int, limit: int = sh.MAX_DATA) -> bytes | None:
    """All the pty holds now, up to ``limit`` bytes: ``b""`` when nothing is there yet, None at end of file.

    One read of a pty master returns at most about 4 KiB (the kernel's buffer chunk), so a ``cat`` of a
    big file used to cross the tunnel, the relay and the recording as 4 KiB messages, each paying a
    websocket frame, a TLS record, a relay queue slot and a JSON line in the cast. Reading until the
    pty is empty coalesces what piled up while the previous message was being sent (measured with
    ``benchmarks/shell.py``: see README); a keystroke's echo is alone in the pty and goes at once.
    An error after some bytes returns those bytes; the next call raises it.
    """
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        try:
            data = os.read(fd, limit - size)
        except BlockingIOError:
            break
        except OSError:
            if chunks:
                break
            raise
        if not data:
            if chunks:
                break
            return None
        chunks.append(data)
        size += len(data)
    return b"".join(chunks)


def _hangup(pty: Pty) -> None:
    """SIGHUP to the shell's whole session (what closing a terminal does), SIGKILL if it is still there later."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pty.process.pid, signal.SIGHUP)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pty.process.pid, signal.SIGCONT)


def _reap(pty: Pty) -> int:
    try:
        code = pty.process.wait(5)
    except Exception:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pty.process.pid, signal.SIGKILL)
        code = pty.process.wait()
    return code


async def _write_all(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_writer(fd, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_writer(fd)
            continue
        view = view[written:]
