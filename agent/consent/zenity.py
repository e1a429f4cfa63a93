"""The native Wayland consent UI: each prompt/indicator is a ``zenity`` child process (GTK 3 on Wayland).

For a Wayland desktop with no usable X display (no XWayland, or ``DISPLAY`` unset or not
answering), where the Tk windows of :mod:`.tk` cannot appear. zenity 3.44 (Debian's; GTK 3 with
``GDK_BACKEND=wayland``) is the well-kept tool for a dialog from outside a GTK program: one child
per window, as with Tk, so the agent can kill a prompt the moment its deadline passes and every
child on session end — by PID.

- **Prompt**: a question with *Allow* / *Deny* (Deny the default button, so a stray Enter refuses),
  ``--timeout`` = the prompt's timeout (zenity exits 5: Deny by timeout). When the prompt offers
  the "my helpdesk may bring colleagues" option, the same question has a third button, *Allow, and
  colleagues may join*, left of Deny (Deny sits between the two Allows). Tried and dropped: a one-row
  checklist (``--default-cancel`` exists only for questions — Enter on the question answers Deny, checked
  on headless Mutter — and the row was cut), and a second question after Allow (it opened where the
  prompt was, so a double click on Allow answered the second question's Yes: seen in the test).
- **Indicator**: a window "… is viewing/controlling this screen" whose only button is *End session*;
  the button, closing the window, or the child dying ends the session (no indicator, no session).
  zenity cannot change a window's text, so a mode or people change replaces the window: the new one
  is up before the old one is killed.
- **Text**: zenity renders ``--text`` as Pango markup and first expands backslash escapes
  (``g_strcompress``: a technician named ``a\\nb`` would get a second line). Everything from the network
  is cut to one line (:mod:`.text`) and escaped for both (:func:`markup`).

No zenity, no Wayland socket, or a window that cannot open is a refusal with that reason, never an
implicit Allow. The chat, file and clipboard windows of the Tk indicator have no zenity counterpart:
this indicator has no ``user_lines``, so the toolkit runs with nobody at the device seeing it
(file requests are refused; see :mod:`agent.toolkit.tunnel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
from pathlib import Path

from .guard import PromptGuard
from .text import NAME_MAX, REASON_MAX, one_line
from .ui import ConsentUnavailable, IndicatorInfo, Mode, PromptAnswer, PromptRequest

log = logging.getLogger(__name__)

PROMPT_TITLE = "Helpline: remote support request"
INDICATOR_TITLE = "Helpline: remote session in progress"
ALLOW_LABEL, DENY_LABEL, END_LABEL = "Allow", "Deny", "End session"
#: The third button of a prompt that offers the colleagues option (zenity prints it and exits 1).
COLLEAGUES_ALLOW = "Allow, and colleagues may join"
#: zenity's exit codes: OK, Cancel (or the window closed), --timeout reached.
EXIT_OK, EXIT_CANCEL, EXIT_TIMEOUT = 0, 1, 5
#: Grace on top of the prompt's own timeout before the child is killed and the answer is Deny.
KILL_GRACE_S = 5.0
#: How long a killed child has to exit after SIGTERM before SIGKILL.
STOP_WAIT_S = 2.0
#: Characters of zenity's stderr kept for a refusal's reason.
STDERR_MAX = 300
CAPABILITY_WORDS = {"chat": "chat with you", "files": "send and receive files", "clipboard": "share the clipboard",
                    "shell": "command shell"}


def markup(text: str) -> str:
    """``text`` shown literally by zenity: Pango markup's five specials and g_strcompress's backslash escaped."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
            .replace("'", "&apos;").replace("\\", "\\\\"))


def _name(technician: str) -> str:
    return one_line(technician, NAME_MAX) or "(unnamed technician)"


def _capabilities(capabilities: tuple[str, ...]) -> str:
    return ", ".join(CAPABILITY_WORDS[c] for c in capabilities if c in CAPABILITY_WORDS)


def prompt_text(request: PromptRequest) -> str:
    """The prompt's text as Pango markup: who (bold), what, why, the note and what else the session may do."""
    heading = "wants to take control of your session" if request.upgrade else "asks to access your screen"
    if request.join:
        heading = "asks to join the session and watch your screen"
    mode = "view and CONTROL (mouse and keyboard)" if request.mode == "control" else "VIEW only"
    reason = one_line(request.reason, REASON_MAX)
    lines = [f"<b>{markup(_name(request.technician))} {heading}</b>", f"Access: {mode}",
             f"Reason given by the technician: \u201c{markup(reason)}\u201d" if reason else "Reason: (none given)"]
    if request.note:
        lines.append(markup(one_line(request.note, REASON_MAX)))
    also = _capabilities(request.capabilities)
    if also:
        lines.append(f"The technician may also: {also}")
    if request.colleagues_option:
        lines.append(f"\u201c{COLLEAGUES_ALLOW}\u201d: colleagues of your helpdesk may join later without asking "
                     "you again (they can only watch; the session window shows who).")
    lines.append(f"No answer within {math.ceil(request.timeout_s)} s means Deny.")
    return "\n".join(lines)


def prompt_args(request: PromptRequest) -> list[str]:
    """zenity's arguments for ``request``: a question whose default button is Deny (and a third button,
    "Allow, and colleagues may join", when the colleagues option is offered)."""
    args = ["--question", "--title", PROMPT_TITLE, "--text", prompt_text(request), "--ok-label", ALLOW_LABEL,
            "--cancel-label", DENY_LABEL, "--timeout", str(max(1, math.ceil(request.timeout_s))), "--width", "520",
            "--default-cancel", "--icon-name", "dialog-question"]
    if request.colleagues_option:
        args += ["--extra-button", COLLEAGUES_ALLOW]
    return args


def people_text(viewers: tuple[str, ...], controller: str | None) -> str:
    """"Watching: ann (controls), tia" — everyone in the session (plain text, not yet escaped)."""
    names = [_name(name) for name in viewers[:8]]
    boss = _name(controller) if controller else ""
    shown = [f"{name} (controls)" if name == boss else name for name in names]
    return "Watching: " + (", ".join(shown) if shown else "nobody") + ("" if boss else " \u2014 nobody controls")


def indicator_text(info: IndicatorInfo, mode: Mode, people: str) -> str:
    """The indicator's text as Pango markup."""
    lead = info.controller or (info.viewers[0] if info.viewers else info.technician)
    what = "controlling" if mode == "control" else "viewing"
    kind = " (unattended access)" if info.unattended else ""
    lines = [f"<b>{markup(_name(lead))} is {what} this screen{kind}</b>"]
    also = _capabilities(info.capabilities)
    if also:
        lines.append(f"may also: {also}")
    if people:
        lines.append(markup(people))
    lines.append(f"Press \u201c{END_LABEL}\u201d to stop it at once.")
    return "\n".join(lines)


def _wayland_socket(wayland: str, env: dict[str, str]) -> Path:
    path = Path(wayland)
    return path if path.is_absolute() else Path(env.get("XDG_RUNTIME_DIR", "/nonexistent")) / wayland


class _Window:
    """One zenity child; ``stop()`` kills it by PID (SIGTERM, then SIGKILL) and reaps it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.killed = False

    @classmethod
    async def start(cls, binary: str, args: list[str], env: dict[str, str]) -> _Window:
        proc = await asyncio.create_subprocess_exec(binary, *args, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=env)
        return cls(proc)

    async def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_WAIT_S):
                await self.proc.wait()  # a watcher may be reading its pipes: wait, not communicate
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


class ZenityIndicator:
    """The running-session window; ``ended`` is set by End session, by closing it, or by its death."""

    #: No chat window, transfer list or notes: the session's toolkit stays off (agent.toolkit.tunnel.seen_by_device).
    shows_toolkit = False

    def __init__(self, ui: ZenityConsentUI, info: IndicatorInfo) -> None:
        self._ui, self._info = ui, info
        self._mode: Mode = info.mode
        self._people = people_text(info.viewers, info.controller) if info.viewers else ""
        self.ended = asyncio.Event()
        #: The people line the window shows now (set once the replacing window is up).
        self.people_line = self._people
        self.people_shown = asyncio.Event()
        self._window: _Window | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The zenity child showing the indicator now (tests kill it; the log names it)."""
        return self._window.proc.pid if self._window is not None else None

    async def show(self) -> None:
        """Put up a window with the current text; then retire the one it replaces."""
        async with self._lock:
            if self._closed:
                return
            old = self._window
            text = indicator_text(self._info, self._mode, self._people)
            args = ["--info", "--title", INDICATOR_TITLE, "--text", text, "--ok-label", END_LABEL,
                    "--icon-name", "dialog-warning", "--width", "460"]
            window = await _Window.start(self._ui.binary, args, self._ui.child_env())
            self._window = window
            watcher = asyncio.create_task(self._watch(window), name="consent-indicator-zenity")
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)
            if old is not None:
                await old.stop()
            log.info("session indicator on the Wayland screen (zenity pid %d)", window.proc.pid)

    async def _watch(self, window: _Window) -> None:
        _out, err = await window.proc.communicate()
        if window.killed or self._closed:
            return  # replaced or closed by the agent: not the person's doing
        if window.proc.returncode == EXIT_OK:
            log.info("session indicator: the user pressed End session")
        elif window.proc.returncode == EXIT_CANCEL:
            log.info("session indicator: the user closed the window (the session ends)")
        else:
            log.warning("session indicator (zenity) exited with %s; ending the session: %s",
                        window.proc.returncode, err.decode(errors="replace")[:STDERR_MAX])
        self.ended.set()

    async def set_mode(self, mode: Mode) -> None:
        if mode != self._mode:
            self._mode = mode
            await self.show()

    async def set_people(self, viewers: tuple[str, ...], controller: str | None) -> None:
        """Everyone watching and who controls: a new window says so, then ``people_shown`` is set."""
        self.people_shown.clear()
        self._info = IndicatorInfo(self._info.technician, self._mode, self._info.unattended, self._info.session_id,
                                   self._info.capabilities, viewers, controller)
        self._people = people_text(viewers, controller)
        await self.show()
        self.people_line = self._people
        self.people_shown.set()

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            window, self._window = self._window, None
        if window is not None:
            await window.stop()
        for watcher in list(self._watchers):
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


class ZenityConsentUI:
    """Prompts and indicators as native Wayland windows on ``wayland`` (default ``$WAYLAND_DISPLAY``)."""

    def __init__(self, wayland: str | None = None, prompts: PromptGuard | None = None, *,
                 binary: str = "zenity", env: dict[str, str] | None = None) -> None:
        self.env = dict(env if env is not None else os.environ)
        self.wayland = wayland if wayland is not None else self.env.get("WAYLAND_DISPLAY", "")
        self.prompts = prompts if prompts is not None else PromptGuard()
        self.binary = binary

    def child_env(self) -> dict[str, str]:
        """The session's environment, GTK told to use Wayland and no X display (nothing of it reaches X)."""
        env = {k: v for k, v in self.env.items() if k not in ("DISPLAY", "XAUTHORITY")}
        env.update(WAYLAND_DISPLAY=self.wayland, GDK_BACKEND="wayland")
        return env

    def unavailable(self) -> str:
        """Why no window can be shown ("" when one can): no Wayland display, its socket gone, no zenity."""
        if not self.wayland:
            return "no Wayland display to show the consent prompt on"
        if not _wayland_socket(self.wayland, self.env).exists():
            return f"the Wayland display {self.wayland!r} is not there (nobody logged in?)"
        if shutil.which(self.binary) is None:
            return "zenity is not installed: no consent prompt can be shown on this Wayland desktop without X"
        return ""

    async def prompt(self, request: PromptRequest) -> PromptAnswer:
        problem = self.unavailable()
        if problem:
            log.warning("consent prompt refused: %s", problem)
            return PromptAnswer(False, "unavailable", problem)
        # Remote input is suspended from before the window exists until the child is reaped.
        with self.prompts.showing():
            code, out, err = await self._ask(prompt_args(request), request.timeout_s)
            log.info("consent prompt (zenity) answered: exit %s", code)
        if code == EXIT_OK:
            return PromptAnswer(True, "user", "allowed by the user")
        if code == EXIT_CANCEL and request.colleagues_option and out.strip() == COLLEAGUES_ALLOW:
            return PromptAnswer(True, "user", "allowed by the user", colleagues=True)
        if code == EXIT_TIMEOUT:
            return PromptAnswer(False, "timeout", "no answer to the consent prompt")
        if code == EXIT_CANCEL and "cannot open display" not in err:
            return PromptAnswer(False, "user", "denied by the user")
        log.warning("consent prompt (zenity) failed with %s: %s", code, err[:STDERR_MAX])
        return PromptAnswer(False, "unavailable", "the consent prompt could not be shown on the Wayland desktop")

    async def _ask(self, args: list[str], timeout_s: float) -> tuple[int | None, str, str]:
        """Run one question window: its exit code (EXIT_TIMEOUT when it outlived its deadline), stdout, stderr."""
        window = await _Window.start(self.binary, args, self.child_env())
        log.info("consent question on the Wayland screen (zenity pid %d)", window.proc.pid)
        try:
            async with asyncio.timeout(timeout_s + KILL_GRACE_S):
                out, err = await window.proc.communicate()
        except TimeoutError:
            return EXIT_TIMEOUT, "", ""
        finally:
            await window.stop()
        return window.proc.returncode, out.decode(errors="replace")[:200], err.decode(errors="replace")

    async def indicator(self, info: IndicatorInfo) -> ZenityIndicator:
        problem = self.unavailable()
        if problem:
            raise ConsentUnavailable(problem)
        indicator = ZenityIndicator(self, info)
        await indicator.show()
        return indicator
