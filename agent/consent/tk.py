"""The real consent UI: each prompt/indicator is a Tk child process (see :mod:`.tk_app`).

A child process per window keeps Tk off the agent's threads, survives a crash of the
window, and lets the agent kill a prompt the moment its deadline passes. No display, or
a display that refuses the connection, is a refusal with that reason — never an
implicit Allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
from dataclasses import asdict
from typing import Any

from protocol.toolkit import MAX_CHAT_CHARS as CHAT_MAX
from protocol.toolkit import MAX_CLIPBOARD_CHARS as CLIPBOARD_MAX

from .guard import PromptGuard
from .ui import ConsentUnavailable, IndicatorInfo, Mode, PromptAnswer, PromptRequest

log = logging.getLogger(__name__)

#: Grace on top of the prompt's own timeout before the child is killed and the answer is Deny.
KILL_GRACE_S = 2.0
START_TIMEOUT_S = 10.0


class _Child:
    """One Tk child process speaking JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, kind: str, display: str, spec: dict[str, Any]) -> _Child:
        env = {**os.environ, "DISPLAY": display}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.consent.tk_app", kind,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env=env,
        )
        child = cls(proc)
        await child.write(spec)
        return child

    async def write(self, data: dict[str, Any]) -> None:
        if self.proc.stdin is None or self.proc.stdin.is_closing():
            return
        self.proc.stdin.write((json.dumps(data) + "\n").encode())
        try:
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            log.info("consent window already gone: %s", exc)

    async def read_event(self) -> dict[str, Any] | None:
        """Next JSON event from the child, or None at EOF."""
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return None
            try:
                event = json.loads(line)
            except ValueError:
                log.warning("consent window printed garbage: %r", line[:200])
                continue
            if isinstance(event, dict):
                return event

    async def stop(self) -> None:
        """Close stdin, then terminate/kill by PID and reap."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 2.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()


class TkIndicator:
    def __init__(self, child: _Child, prompts: PromptGuard | None = None) -> None:
        self._child = child
        self._prompts = prompts
        #: Holds the prompt guard while the user's chat window has the keyboard.
        self._typing = contextlib.ExitStack()
        self._typing_held = False
        self.ended = asyncio.Event()
        #: What the device user typed in the chat window, for the session's toolkit.
        self.user_lines: asyncio.Queue[str] = asyncio.Queue(64)
        #: The device's clipboard text each time it changed while watched.
        self.clipboard_changes: asyncio.Queue[str] = asyncio.Queue(16)
        self._fetches: dict[str, asyncio.Future[bool]] = {}
        #: Folders the user picked for incoming files (the toolkit checks each before using it).
        self.folder_choices: asyncio.Queue[str] = asyncio.Queue(8)
        #: Holds the prompt guard while the folder window is open (only the user picks the folder).
        self._dialog = contextlib.ExitStack()
        #: The transfers the indicator lists now (set when it confirms a ``transfer`` command).
        self.transfers_shown: list[str] = []
        #: The folder incoming files go to, as last shown on the indicator.
        self.folder_shown = ""
        #: The people line the window shows now (set when it confirms a ``people`` command).
        self.people_line = ""
        self.people_shown = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name="consent-indicator")

    async def _read(self) -> None:
        while True:
            event = await self._child.read_event()
            if event is None:
                if self._child.proc.returncode not in (None, 0, -15):
                    log.warning("session indicator exited unexpectedly; ending the session")
                # The indicator vanished (killed, crashed, window closed): the user must see
                # a running session, so no indicator means no session.
                self._chat_focus(False)
                self._dialog_open(False)
                self.ended.set()
                return
            if event.get("event") == "end":
                self.ended.set()
            elif event.get("event") == "people":
                self.people_line = str(event.get("shown", ""))[:1000]
                self.people_shown.set()
            elif event.get("event") == "chat_focus":
                self._chat_focus(event.get("on") is True)
            elif event.get("event") == "fetch":
                waiting = self._fetches.pop(str(event.get("id", "")), None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(event.get("allowed") is True)
            elif event.get("event") == "dialog":
                self._dialog_open(event.get("on") is True)
            elif event.get("event") == "folder" and isinstance(event.get("path"), str):
                with contextlib.suppress(asyncio.QueueFull):
                    self.folder_choices.put_nowait(event["path"][:4096])
            elif event.get("event") == "transfers" and isinstance(event.get("shown"), list):
                self.transfers_shown = [str(line)[:1000] for line in event["shown"]]
            elif event.get("event") == "clipboard" and isinstance(event.get("text"), str):
                with contextlib.suppress(asyncio.QueueFull):
                    self.clipboard_changes.put_nowait(event["text"][:CLIPBOARD_MAX])
            elif event.get("event") == "chat" and isinstance(event.get("text"), str) and event["text"].strip():
                with contextlib.suppress(asyncio.QueueFull):  # a flood from the window is dropped, not queued
                    self.user_lines.put_nowait(event["text"][:CHAT_MAX])

    def _chat_focus(self, on: bool) -> None:
        """The user is typing in the chat window: suspend remote input meanwhile (and resume after)."""
        if on and self._prompts is not None and not self._typing_held:
            self._typing.enter_context(self._prompts.showing())
            self._typing_held = True
        elif not on:
            self._typing.close()
            self._typing_held = False

    def _dialog_open(self, on: bool) -> None:
        """The folder window is open: suspend remote input meanwhile (and resume after)."""
        if on and self._prompts is not None:
            self._dialog.close()
            self._dialog.enter_context(self._prompts.showing())
        elif not on:
            self._dialog.close()

    async def show_folder(self, path: str) -> None:
        """Say on the indicator where files from the technician go now."""
        self.folder_shown = path
        await self._child.write({"cmd": "folder", "path": path})

    async def transfer(self, text: str) -> None:
        """Add a transfer to the indicator's list ("ann sent setup.pdf", "you sent log.txt")."""
        await self._child.write({"cmd": "transfer", "text": text})

    async def set_mode(self, mode: Mode) -> None:
        await self._child.write({"cmd": "mode", "mode": mode})

    async def set_people(self, viewers: tuple[str, ...], controller: str | None) -> None:
        """Everyone watching and who controls (join, leave, hand-off); the window confirms with ``people``."""
        self.people_shown.clear()
        await self._child.write({"cmd": "people", "viewers": list(viewers), "controller": controller})

    async def chat(self, who: str, text: str) -> None:
        """Show a technician's chat line in the chat window (opening it)."""
        await self._child.write({"cmd": "chat", "who": who, "text": text})

    async def approve_fetch(self, path: str, timeout_s: float) -> bool:
        """Ask the user whether the technician may have ``path``; False on Deny, no answer or a vanished window."""
        request_id = secrets.token_hex(8)
        waiting: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._fetches[request_id] = waiting
        try:
            await self._child.write({"cmd": "fetch", "id": request_id, "path": path, "timeout_s": timeout_s})
            async with asyncio.timeout(timeout_s + KILL_GRACE_S):
                return await waiting
        except TimeoutError:
            return False
        finally:
            self._fetches.pop(request_id, None)

    async def set_clipboard(self, text: str) -> None:
        await self._child.write({"cmd": "clipboard.set", "text": text})

    async def watch_clipboard(self, on: bool) -> None:
        await self._child.write({"cmd": "clipboard.watch", "on": on})

    async def note(self, text: str) -> None:
        """Show what happened (e.g. "ann sent setup.pdf") on the indicator and in the chat window."""
        await self._child.write({"cmd": "note", "text": text})

    async def close(self) -> None:
        await self._child.write({"cmd": "close"})
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._child.stop()
        self._chat_focus(False)  # a window that is gone holds nothing
        self._dialog_open(False)


class TkConsentUI:
    """Prompts and indicators on X display ``display`` (default ``$DISPLAY``)."""

    def __init__(self, display: str | None = None, prompts: PromptGuard | None = None) -> None:
        self.display = display if display is not None else os.environ.get("DISPLAY")
        self.prompts = prompts if prompts is not None else PromptGuard()

    async def prompt(self, request: PromptRequest) -> PromptAnswer:
        if not self.display:
            return PromptAnswer(False, "unavailable", "no display: nobody is logged in to ask")
        # Remote input is suspended from before the window exists until the child is reaped.
        with self.prompts.showing():
            return await self._prompt(request, self.display)

    async def _prompt(self, request: PromptRequest, display: str) -> PromptAnswer:
        child = await _Child.start("prompt", display, asdict(request))
        try:
            async with asyncio.timeout(request.timeout_s + START_TIMEOUT_S + KILL_GRACE_S):
                while True:
                    event = await child.read_event()
                    if event is None:
                        return PromptAnswer(False, "unavailable", "the consent prompt could not be shown")
                    kind = event.get("event")
                    if kind == "ready":  # what the window says, in the log of whoever showed it (agent or helper)
                        shown = event.get("shown")
                        heading = shown.get("heading") if isinstance(shown, dict) else None
                        log.info("consent prompt on screen: %s", str(heading or "")[:300])
                        continue
                    if kind == "error":
                        return PromptAnswer(False, "unavailable", str(event.get("message", "display unavailable")))
                    if kind == "answer":
                        allowed = event.get("allowed") is True
                        if event.get("by") == "timeout":
                            return PromptAnswer(False, "timeout", "no answer to the consent prompt")
                        return PromptAnswer(allowed, "user", "allowed by the user" if allowed
                                            else "denied by the user",
                                            colleagues=allowed and request.colleagues_option
                                            and event.get("colleagues") is True)
        except TimeoutError:
            return PromptAnswer(False, "timeout", "no answer to the consent prompt")
        finally:
            await child.stop()

    async def indicator(self, info: IndicatorInfo) -> TkIndicator:
        if not self.display:
            raise ConsentUnavailable("no display to show the session indicator on")
        child = await _Child.start("indicator", self.display, asdict(info))
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                event = await child.read_event()
        except TimeoutError:
            event = None
        if event is None or event.get("event") != "ready":
            await child.stop()
            message = event.get("message") if event else "the session indicator did not start"
            raise ConsentUnavailable(str(message))
        return TkIndicator(child, self.prompts)
