"""What the relay does with the remote shell (:mod:`protocol.shell`): refuse it on view-only sessions,
record its output as asciicast v2, and audit its start and end.

The relay stays a pipe: it reads the first byte of binary messages and the ``type`` of text that
starts with ``{"type":"shell.``. Technician → device: on a view-only session (a viewer-role
account only gets those) ``shell.open`` is answered with ``shell.error`` ``view_only`` and every
other shell message is dropped, so no keystroke reaches a pty. Device → technician: terminal
bytes go to ``{session_id}.cast`` (asciicast v2: a JSON header line, then ``[t, "o", text]`` and
``[t, "r", "COLSxROWS"]`` lines), never into the screen recording; the technician's keystrokes
are never written anywhere. The file is 0600 in the recordings directory and written by a
thread, so the event loop never waits on the disk.

Idle: with ``idle_timeout_s`` (config ``shell_idle_timeout_s``) and a way to the agent
(``to_agent``), a running shell that moves no byte either way for that long gets ``shell.close
{idle}`` from here, and the hang-up is audited (``idle``) by the server itself; the device's own
policy timeout runs on the agent, so the shorter of the two ends an idle shell.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from protocol import shell as sh
from server.storage.sealed import StorageKey

from .spool import AppendSpool

log = logging.getLogger(__name__)

#: (event, details) for the audit: "started", "ended", "refused", "idle".
OnShell = Callable[[str, dict[str, object]], None]
#: Queue one text message for the agent (behind whatever the technician sent before it).
ToAgent = Callable[[str], Awaitable[None]]


class CastRecorder:
    """Appends asciicast v2 lines to ``path`` from a writer thread."""

    def __init__(self, path: Path, cols: int, rows: int, title: str, key: StorageKey | None = None) -> None:
        self.path = path
        self.started = time.monotonic()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.bytes = 0
        self._spool = AppendSpool(path, max_records=4096, what="shell recording", key=key)
        header = {"version": 2, "width": cols, "height": rows, "timestamp": int(time.time()), "title": title[:200],
                  "env": {"TERM": "xterm-256color"}}
        self._spool.put((json.dumps(header) + "\n").encode())

    def _line(self, kind: str, text: str) -> None:
        line = json.dumps([round(time.monotonic() - self.started, 6), kind, text]) + "\n"
        self._spool.put(line.encode())

    def output(self, data: bytes) -> None:
        self.bytes += len(data)
        text = self._decoder.decode(data)
        if text:
            self._line("o", text)

    def resize(self, cols: int, rows: int) -> None:
        self._line("r", f"{cols}x{rows}")

    def close(self) -> None:
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._line("o", tail)
        self._spool.close()


class ShellWatch:
    """The relay's view of one session's shell."""

    def __init__(self, *, view_only: Callable[[], bool], cast_path: Path | None, title: str,
                 on_shell: OnShell | None = None, idle_timeout_s: float = 0.0, to_agent: ToAgent | None = None,
                 clock: Callable[[], float] = time.monotonic, seal_key: StorageKey | None = None) -> None:
        self.view_only = view_only
        self.cast_path = cast_path
        self.seal_key = seal_key
        self.title = title
        self.on_shell = on_shell
        self.size = (80, 24)
        self.recorder: CastRecorder | None = None
        self.refused_inputs = 0
        self.idle_timeout_s = idle_timeout_s
        #: Set by whoever owns the relay (it cannot be passed before the relay exists).
        self.to_agent = to_agent
        self.clock = clock
        self.last_activity = clock()
        self._idle_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def from_technician(self, binary: bool, data: str | bytes) -> tuple[bool, str | None]:
        """(is a shell message, the answer to send back instead of passing it on — None: pass it on)."""
        if binary:
            if not (isinstance(data, (bytes, bytearray)) and sh.is_data(data)):
                return False, None
            if self.view_only():
                self.refused_inputs += 1
                return True, ""  # dropped without an answer (one refusal for the open was enough)
            self.last_activity = self.clock()
            return True, None
        if not (isinstance(data, str) and data.startswith(sh.TEXT_PREFIX)):
            return False, None
        try:
            message = sh.decode_text(data)
        except sh.ShellProtocolError:
            return True, None  # the agent answers garbage itself
        if self.view_only():
            if isinstance(message, sh.Open):
                self._event("refused", {"code": "view_only", "by": "server"})
                return True, sh.encode_text(sh.Error(code="view_only",
                                                     message="a shell needs a control session (view-only here)"))
            return True, ""
        if isinstance(message, (sh.Open, sh.Resize)):
            self.size = (message.cols, message.rows)
            if isinstance(message, sh.Resize) and self.recorder is not None:
                self.recorder.resize(message.cols, message.rows)
        return True, None

    def from_agent(self, binary: bool, data: str | bytes) -> bool:
        """Note a device → technician message; True when it is shell output (kept out of the screen recording)."""
        if binary:
            if not (isinstance(data, (bytes, bytearray)) and sh.is_data(data)):
                return False
            self.last_activity = self.clock()
            if self.recorder is not None:
                self.recorder.output(bytes(data[1:]))
            return True
        if not (isinstance(data, str) and data.startswith(sh.TEXT_PREFIX)):
            return False
        try:
            message = sh.decode_text(data)
        except sh.ShellProtocolError:
            return True
        if isinstance(message, sh.Opened):
            if self.recorder is None and self.cast_path is not None:
                self.recorder = CastRecorder(self.cast_path, *self.size, self.title, self.seal_key)
            elif self.recorder is not None:
                self.recorder.resize(*self.size)
            self._event("started", {"user": message.user, "uid": message.uid, "tty": message.tty,
                                    "root": message.root})
            self._watch_idle()
        elif isinstance(message, sh.Exit):
            self._stop_idle()
            self._event("ended", {"status": message.status, "reason": message.reason,
                                  "output_bytes": self.recorder.bytes if self.recorder else None})
        elif isinstance(message, sh.Error):
            self._event("refused", {"code": message.code, "message": message.message, "by": "device"})
        return True

    def _event(self, kind: str, details: dict[str, object]) -> None:
        if self.on_shell is not None:
            self.on_shell(kind, details)

    def _watch_idle(self) -> None:
        """Start the shell's idle timer (called on the event loop, from the relay's reader)."""
        self.last_activity = self.clock()
        if self.idle_timeout_s <= 0 or self.to_agent is None or self._idle_task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._idle_task = self._loop.create_task(self._idle(self.to_agent))

    def _stop_idle(self) -> None:
        task, self._idle_task = self._idle_task, None
        if task is not None:
            task.cancel()

    async def _idle(self, to_agent: ToAgent) -> None:
        while True:
            left = self.last_activity + self.idle_timeout_s - self.clock()
            if left <= 0:
                break
            await asyncio.sleep(left)
        log.info("shell idle for %.0f s; hanging it up", self.idle_timeout_s)
        self._event("idle", {"idle_s": self.idle_timeout_s, "by": "server"})
        self._idle_task = None
        await to_agent(sh.encode_text(sh.Close(idle=True)))

    def close(self) -> None:
        """The session ended (may run in a worker thread): stop the idle timer, finish the recording."""
        task, loop = self._idle_task, self._loop
        if task is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(task.cancel)
        if self.recorder is not None:
            self.recorder.close()
