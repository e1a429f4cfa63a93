"""The toolkit side of one screen session: answers chat, file and clipboard messages on its tunnel.

The screen session (:mod:`agent.screen.session`) hands it every message its own decoder does
not know (toolkit text, and binary chunks by their magic byte) and gives it a way to send. It
refuses whatever :class:`~agent.toolkit.caps.ToolkitCaps` does not allow, with a ``file.error``
or ``error`` naming why, whatever the technician asks. Disk work runs in a thread; the sending
of a fetched file is paced by the viewer's acks (at most ``FETCH_WINDOW`` chunks in flight) and
its chunks go out only when no screen update waits (:mod:`.priority`), so a transfer never stalls typing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from protocol import toolkit as tk

from ..desktop.downloads import downloads_dir
from .caps import ToolkitCaps
from .inbox import InboxRefused, Incoming, free_bytes, open_folder, usable_folder
from .outbox import FetchRefused, covered, open_for_fetch, resolve

log = logging.getLogger(__name__)

#: Chunk size the agent asks for and sends (small: screen updates interleave between chunks).
CHUNK = 128 * 1024
#: Chunks the viewer may have in flight towards the agent (4 x 128 KiB = 512 KiB). Chunks wait behind screen acks
#: and input (agent.toolkit.priority, server.sessions.lanes), but bytes already in a socket buffer cannot be
#: overtaken: with 32 and one FIFO, benchmarks/transfer.py saw the screen's p95 latency 8x idle during a transfer;
#: with 4 and the lanes, 1.4-1.6x in three runs at 23-32 MB/s (agent in its own process, a loaded 2-core box).
WINDOW = 4
#: Chunks the agent keeps in flight towards the viewer (1 MiB: below the relay's bulk lane of 16 messages).
FETCH_WINDOW = 8
#: Transfers open at once, either way.
MAX_TRANSFERS = 4

SendText = Callable[[str], Awaitable[None]]
SendBytes = Callable[[bytes], Awaitable[None]]
#: Ask the person at the device whether the technician may have this file (True = yes).
Approve = Callable[[str], Awaitable[bool]]


class DeviceSide(Protocol):
    """What the person at the device sees of the toolkit: the indicator (notes) and its chat window."""

    #: Lines the user typed in the chat window.
    user_lines: asyncio.Queue[str]

    async def chat(self, who: str, text: str) -> None: ...

    async def note(self, text: str) -> None: ...

    #: The device clipboard's text each time it changed while watched.
    clipboard_changes: asyncio.Queue[str]

    async def set_clipboard(self, text: str) -> None: ...

    async def watch_clipboard(self, on: bool) -> None: ...

    async def approve_fetch(self, path: str, timeout_s: float) -> bool: ...

    #: Folders the user picked for incoming files (checked here before use).
    folder_choices: asyncio.Queue[str]

    async def show_folder(self, path: str) -> None: ...

    async def transfer(self, text: str) -> None: ...


@dataclass
class ToolkitStats:
    received_files: int = 0
    sent_files: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    refused: int = 0
    chat_lines: int = 0
    clipboard_in: int = 0
    clipboard_out: int = 0


class Toolkit:
    """Chat, files and clipboard for one session, within ``caps``."""

    def __init__(self, caps: ToolkitCaps, send_text: SendText, send_bytes: SendBytes, *, technician: str = "",
                 folder: Path | None = None, home: Path | None = None, approve: Approve | None = None,
                 device: DeviceSide | None = None, clock: Callable[[], float] = time.time) -> None:
        self.caps = caps
        self._send_text, self._send_bytes = send_text, send_bytes
        self.technician = technician
        self.folder = folder if folder is not None else downloads_dir()
        self.home = home if home is not None else Path.home()
        self.approve = approve
        self.device = device
        #: Clipboard sync per direction: off until the technician switches it on (``clip.sync``).
        self.clip_to_device = False
        self.clip_from_device = False
        #: What the device user was shown, in order (the indicator's list of transfers).
        self.notes: list[str] = []
        self.clock = clock
        self.stats = ToolkitStats()
        self.transcript: list[tk.ChatMessage] = []
        self.incoming: dict[int, Incoming] = {}
        self._fetch_acks: dict[int, int] = {}
        self._fetch_wake = asyncio.Event()
        self._fetches: dict[int, asyncio.Task[None]] = {}
        self._dir_fd = -1
        #: Descriptors of folders the user switched away from while a file was still arriving there.
        self._old_dir_fds: list[int] = []
        #: Every transfer of the session as the device user was told it (the indicator lists them all).
        self.transfers: list[str] = []
        self.handlers: dict[type, Callable[[tk.ToolkitAny], Awaitable[None]]] = {
            tk.ChatSend: self._on_chat,
            tk.FileOffer: self._on_offer,
            tk.FileFetch: self._on_fetch,
            tk.FileAck: self._on_ack,
            tk.FileError: self._on_peer_error,
            tk.ClipSet: self._on_clip,
            tk.ClipSync: self._on_clip_sync,
        }

    async def send(self, message: tk.ToolkitAny) -> None:
        await self._send_text(tk.encode_text(message))

    async def start(self) -> None:
        """Tell the viewer what this session may do (first, before anything else of the toolkit)."""
        refused = {k: v for k, v in self.caps.refused.items() if k in tk.CAPABILITIES}
        await self.send(tk.Caps(allowed=self.caps.listed(), max_file_bytes=self.caps.max_file_bytes,  # type: ignore[arg-type]
                                refused=refused))  # type: ignore[arg-type]
        if self.device is not None and not self._allowed("files"):
            await self._on_device(self.device.show_folder(str(self.folder)), "folder")

    # --- dispatch -----------------------------------------------------------------------

    async def on_text(self, message: tk.ToolkitAny) -> bool:
        """Handle a toolkit message from the viewer; False when the viewer may not send this kind."""
        handler = self.handlers.get(type(message))
        if handler is None:
            return False
        await handler(message)
        return True

    async def on_binary(self, data: bytes) -> None:
        try:
            chunk = tk.unpack_chunk(data)
        except tk.ToolkitProtocolError as exc:
            await self._refuse(0, "toolkit_invalid", exc.message)
            return
        incoming = self.incoming.get(chunk.transfer)
        if incoming is None:
            await self._refuse(chunk.transfer, "no_transfer", "no file is being received under this number")
            return
        try:
            offset = await asyncio.to_thread(incoming.write, chunk.offset, chunk.data)
        except InboxRefused as exc:
            self.incoming.pop(chunk.transfer, None)
            await self._refuse(chunk.transfer, exc.code, str(exc))
            return
        except OSError as exc:
            self.incoming.pop(chunk.transfer, None)
            await asyncio.to_thread(incoming.close)
            await self._refuse(chunk.transfer, "write_failed", exc.strerror or "write failed")
            return
        self.stats.bytes_in += len(chunk.data)
        await self.send(tk.FileAck(transfer=chunk.transfer, offset=offset))
        if offset == incoming.size:
            await self._complete(chunk.transfer, incoming)

    async def _refuse(self, transfer: int, code: str, message: str) -> None:
        self.stats.refused += 1
        log.info("toolkit refused %s: %s", code, message, extra={"transfer": transfer})
        await self.send(tk.FileError(transfer=max(transfer, 1), code=code, message=message[:500]))

    def _allowed(self, cap: str) -> str:
        """'' when ``cap`` is allowed, else why not."""
        if cap in self.caps.allowed:
            return ""
        return self.caps.refused.get(cap, f"{cap} is not part of this session")

    # --- chat ---------------------------------------------------------------------------

    async def _on_chat(self, message: tk.ToolkitAny) -> None:
        assert isinstance(message, tk.ChatSend)
        why = self._allowed("chat")
        if why:
            await self._send_text(_error("chat_refused", why))
            return
        await self.say("technician", self.technician, message.text)

    async def say(self, sender: str, name: str, text: str) -> None:
        """Add a line to the transcript and show it at both ends (the device user's lines come through here)."""
        line = tk.ChatMessage(seq=len(self.transcript), sender="user" if sender == "user" else "technician",
                              name=name[:128], text=text[: tk.MAX_CHAT_CHARS], at=self.clock())
        self.transcript.append(line)
        self.stats.chat_lines += 1
        await self.send(line)
        if sender != "user" and self.device is not None:
            try:
                await self.device.chat(name or "Technician", text)
            except (OSError, RuntimeError) as exc:
                log.info("chat line not shown on the device: %s", exc)

    async def notify(self, text: str) -> None:
        """Tell the person at the device what happened (the indicator lists it)."""
        self.notes.append(text)
        log.info("toolkit: %s", text)
        if self.device is not None:
            try:
                await self.device.note(text)
            except (OSError, RuntimeError) as exc:
                log.info("note not shown on the device: %s", exc)

    async def record_transfer(self, text: str) -> None:
        """A finished transfer: told to the user, and added to the indicator's list of the session's transfers."""
        self.transfers.append(text)
        if self.device is not None:  # the list first: the indicator grows before the chat window opens beside it
            await self._on_device(self.device.transfer(text), "transfer")
        await self.notify(text)

    async def _on_device(self, shown: Awaitable[None], what: str) -> None:
        try:
            await shown
        except (OSError, RuntimeError) as exc:
            log.info("%s not shown on the device: %s", what, exc)

    async def user_folders(self) -> None:
        """Use each folder the device user picks for the files that arrive from then on (when it passes the checks)."""
        assert self.device is not None
        while True:
            await self.use_folder(await self.device.folder_choices.get())

    async def use_folder(self, picked: str) -> bool:
        """Switch incoming files to ``picked``: absolute (or ``~/…``), no symlink anywhere in it, a folder this user
        may write; a file already arriving finishes where it started. False (and the user is told why) otherwise."""
        if self._allowed("files"):
            return False
        try:
            folder = await asyncio.to_thread(lambda: usable_folder(resolve(picked, self.home)))
            fd = await asyncio.to_thread(open_folder, folder)
        except InboxRefused as exc:
            await self.notify(f"Files cannot go to {picked[:200]}: {exc}")
            return False
        old, self._dir_fd, self.folder = self._dir_fd, fd, folder
        if old >= 0:
            if any(incoming.dir_fd == old for incoming in self.incoming.values()):
                self._old_dir_fds.append(old)
            else:
                os.close(old)
        log.info("toolkit: incoming files go to the folder the user picked", extra={"folder": str(folder)})
        if self.device is not None:
            await self._on_device(self.device.show_folder(str(folder)), "folder")
        await self.notify(f"Files from {self.technician or 'the technician'} now go to {folder}")
        return True

    async def user_chat(self) -> None:
        """Relay what the device user types in the chat window, for as long as the session runs."""
        assert self.device is not None
        while True:
            text = await self.device.user_lines.get()
            if not self._allowed("chat") and text.strip():
                await self.say("user", "", text.strip()[: tk.MAX_CHAT_CHARS])

    # --- technician → device --------------------------------------------------------------

    async def _on_offer(self, message: tk.ToolkitAny) -> None:
        assert isinstance(message, tk.FileOffer)
        why = self._allowed("files")
        if why:
            await self._refuse(message.transfer, "files_refused", why)
            return
        if message.size > self.caps.max_file_bytes:
            await self._refuse(message.transfer, "too_large",
                               f"{message.size} bytes exceeds this device's {self.caps.max_file_bytes}-byte limit")
            return
        if message.transfer in self.incoming or len(self.incoming) + len(self._fetches) >= MAX_TRANSFERS:
            await self._refuse(message.transfer, "busy", f"at most {MAX_TRANSFERS} transfers at once")
            return
        try:
            offset = await asyncio.to_thread(self._open_incoming, message)
        except InboxRefused as exc:
            await self._refuse(message.transfer, exc.code, str(exc))
            return
        await self.send(tk.FileAccept(transfer=message.transfer, offset=offset, chunk=CHUNK, window=WINDOW))
        incoming = self.incoming[message.transfer]
        if offset == incoming.size:  # an empty file, or one whose bytes all arrived before a drop
            await self._complete(message.transfer, incoming)

    def _open_incoming(self, offer: tk.FileOffer) -> int:
        if self._dir_fd < 0:
            self._dir_fd = open_folder(self.folder)
        incoming = Incoming(self._dir_fd, offer.name, offer.size, offer.sha256)
        offset = incoming.open()
        if free_bytes(self._dir_fd) < offer.size - offset:
            incoming.close()
            raise InboxRefused("no_space", f"not enough free space in {self.folder.name} for {offer.size} bytes")
        self.incoming[offer.transfer] = incoming
        return offset

    async def _complete(self, transfer: int, incoming: Incoming) -> None:
        self.incoming.pop(transfer, None)
        try:
            name = await asyncio.to_thread(incoming.finish)
        except InboxRefused as exc:
            await self._refuse(transfer, exc.code, str(exc))
            return
        self.stats.received_files += 1
        log.info("toolkit: file received", extra={"transfer": transfer, "file_name": name, "size": incoming.size,
                                                  "sha256": incoming.sha256})
        await self.record_transfer(f"{self.technician or 'The technician'} sent {name} to {self.folder.name}"
                                   f" ({incoming.size} bytes)")
        await self.send(tk.FileDone(transfer=transfer, name=name, size=incoming.size, sha256=incoming.sha256))

    # --- device → technician --------------------------------------------------------------

    async def _on_fetch(self, message: tk.ToolkitAny) -> None:
        assert isinstance(message, tk.FileFetch)
        why = self._allowed("files")
        if why:
            await self._refuse(message.transfer, "files_refused", why)
            return
        if message.transfer in self._fetches or len(self.incoming) + len(self._fetches) >= MAX_TRANSFERS:
            await self._refuse(message.transfer, "busy", f"at most {MAX_TRANSFERS} transfers at once")
            return
        try:
            path = resolve(message.path, self.home)
        except FetchRefused as exc:
            await self._refuse(message.transfer, exc.code, str(exc))
            return
        ask = not covered(path, self.caps.fetch_paths, self.home)
        if ask and (self.caps.unattended or self.approve is None):
            why = "the grant does not cover this path" if self.caps.unattended else "nobody at the device to ask"
            await self._refuse(message.transfer, "not_granted", why)
            return
        self._fetch_acks[message.transfer] = message.offset
        # A task: the user's answer may take a while, and the screen session's messages must keep flowing.
        task = asyncio.ensure_future(self._send_file(message.transfer, path, message.offset, ask))
        self._fetches[message.transfer] = task
        task.add_done_callback(lambda _t: self._fetches.pop(message.transfer, None))

    async def _send_file(self, transfer: int, path: str, offset: int, ask: bool = False) -> None:
        if ask:
            assert self.approve is not None
            if not await self.approve(path):
                self._fetch_acks.pop(transfer, None)
                await self._refuse(transfer, "user_declined", "the user did not hand this file over")
                return
        try:
            fd, size = await asyncio.to_thread(open_for_fetch, path, self.caps.max_file_bytes)
        except FetchRefused as exc:
            await self._refuse(transfer, exc.code, str(exc))
            return
        name = os.path.basename(path)
        try:
            if offset > size:
                await self._refuse(transfer, "bad_offset", f"offset {offset} beyond the file's {size} bytes")
                return
            hasher = hashlib.sha256()
            await asyncio.to_thread(_hash_prefix, fd, offset, hasher)
            await self.send(tk.FileStart(transfer=transfer, name=name, size=size, offset=offset))
            position = offset
            while position < size:
                while position - self._fetch_acks.get(transfer, 0) >= FETCH_WINDOW * CHUNK:
                    self._fetch_wake.clear()
                    await self._fetch_wake.wait()
                block = await asyncio.to_thread(os.pread, fd, min(CHUNK, size - position), position)
                if not block:
                    await self._refuse(transfer, "size_mismatch", "the file shrank while it was sent")
                    return
                hasher.update(block)
                await self._send_bytes(tk.pack_chunk(transfer, position, block))
                position += len(block)
                self.stats.bytes_out += len(block)
            digest = hasher.hexdigest()
            await self.send(tk.FileEnd(transfer=transfer, sha256=digest, name=name, size=size))
            self.stats.sent_files += 1
            log.info("toolkit: file fetched", extra={"transfer": transfer, "file_name": name, "size": size,
                                                     "sha256": digest})
            await self.record_transfer(f"you sent {name} to {self.technician or 'the technician'} ({size} bytes)" if ask
                                       else f"{self.technician or 'The technician'} copied {name} ({size} bytes)")
        finally:
            os.close(fd)
            self._fetch_acks.pop(transfer, None)

    async def _on_ack(self, message: tk.ToolkitAny) -> None:
        assert isinstance(message, tk.FileAck)
        if message.transfer in self._fetch_acks:
            self._fetch_acks[message.transfer] = max(self._fetch_acks[message.transfer], message.offset)
            self._fetch_wake.set()

    async def _on_peer_error(self, message: tk.ToolkitAny) -> None:
        assert isinstance(message, tk.FileError)
        task = self._fetches.get(message.transfer)
        if task is not None:
            task.cancel()
        incoming = self.incoming.pop(message.transfer, None)
        if incoming is not None:
            await asyncio.to_thread(incoming.close)  # kept for a resume
        log.info("viewer ended transfer %s: %s", message.transfer, message.code)

    # --- clipboard ------------------------------------------------------------------------

    async def _on_clip(self, message: tk.ToolkitAny) -> None:
        assert isinstance(message, tk.ClipSet)
        why = self._allowed("clipboard") or ("" if self.device is not None else "nobody at the device has a clipboard")
        if why or not self.clip_to_device:
            await self._send_text(_error("clipboard_refused", why or "clipboard sync to the device is off"))
            return
        assert self.device is not None
        await self.device.set_clipboard(message.text)
        self.stats.clipboard_in += 1
        await self.notify(f"{self.technician or 'The technician'} put {len(message.text)} characters on your clipboard")

    async def _on_clip_sync(self, message: tk.ToolkitAny) -> None:
        assert isinstance(message, tk.ClipSync)
        why = self._allowed("clipboard") or ("" if self.device is not None else "nobody at the device has a clipboard")
        if why:
            await self._send_text(_error("clipboard_refused", why))
            return
        assert self.device is not None
        self.clip_to_device, self.clip_from_device = message.to_device, message.from_device
        await self.device.watch_clipboard(message.from_device)
        await self.send(tk.ClipSync(to_device=self.clip_to_device, from_device=self.clip_from_device))

    async def device_clipboard(self) -> None:
        """Send the device's clipboard to the viewer each time it changes, while that direction is on."""
        assert self.device is not None
        while True:
            text = await self.device.clipboard_changes.get()
            if self.clip_from_device and not self._allowed("clipboard"):
                await self.send(tk.ClipSet(text=text[: tk.MAX_CLIPBOARD_CHARS]))
                self.stats.clipboard_out += 1

    # --- end ----------------------------------------------------------------------------

    async def close(self) -> None:
        for task in list(self._fetches.values()):
            task.cancel()
        await asyncio.gather(*self._fetches.values(), return_exceptions=True)
        for incoming in self.incoming.values():
            incoming.close()  # partial files stay: the same file offered again resumes
        self.incoming.clear()
        for fd in [self._dir_fd, *self._old_dir_fds]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._dir_fd, self._old_dir_fds = -1, []


def _hash_prefix(fd: int, until: int, hasher: hashlib._Hash) -> None:
    position = 0
    while position < until:
        block = os.pread(fd, min(1024 * 1024, until - position), position)
        if not block:
            return
        hasher.update(block)
        position += len(block)


def _error(code: str, message: str) -> str:
    from protocol import stream

    return stream.encode_text(stream.Error(code=code, message=message[:2000]))
