"""The Tk consent prompt and session indicator, run as a child process per window.

Tk is not thread-safe and must own its process's main thread, so the agent starts
``python -m agent.consent.tk_app prompt|indicator`` with ``DISPLAY`` set and speaks JSON
lines: the first stdin line is the window's content; stdout reports ``ready``, then
``answer`` (prompt) or ``end`` (indicator's *End session* button). The indicator obeys
``{"cmd": "mode"|"close"}`` lines and exits when stdin closes (the agent went away).

Layout rules (small screens, hostile text): the technician's name and reason are shown as one
line each, length-limited (:mod:`.text`); the buttons are packed *first*, so when text and
screen disagree it is the text that gets cut, never Allow, Deny or End session; and the window
is sized to its content, capped at the screen. ``ready`` reports the text shown and each
button's requested size, so a test can check on a screenshot that nothing is clipped.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import tkinter as tk
from typing import Any

from agent.consent.text import NAME_MAX, REASON_MAX, one_line

PROMPT_TITLE = "Helpline: remote support request"
INDICATOR_TITLE = "Helpline: remote session in progress"
CHAT_TITLE = "Helpline: chat with your technician"
FETCH_TITLE = "Helpline: the technician asks for a file"
FOLDER_TITLE = "Helpline: where files from the technician go"
#: Button colours (exact, so a test can find the buttons on screen like a user would).
ALLOW_BG = "#1b7f3a"
DENY_BG = "#a31515"
END_BG = "#d9480f"
CHAT_BG = "#1f5fa8"
FOLDER_BG = "#5b3f8c"
BROWSE_BG = "#5a5a5a"
#: The "my helpdesk may bring colleagues" checkbox (one exact colour, like the buttons: tests find it).
COLLEAGUES_BG = "#2d5f6b"
#: Transfers the indicator's list shows at once (it scrolls; every transfer of the session stays in it).
TRANSFER_ROWS = 4
#: Characters the user may type in one chat line (protocol.toolkit.MAX_CHAT_CHARS).
CHAT_MAX = 2000
#: Characters of clipboard text synced (protocol.toolkit.MAX_CLIPBOARD_CHARS) and how often it is looked at.
CLIPBOARD_MAX = 8000
CLIPBOARD_POLL_MS = 300
#: Lines kept in the chat window.
CHAT_LINES = 500
EXIT_NO_DISPLAY = 2


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


#: Space kept free around a window on small screens.
SCREEN_MARGIN = 8
PROMPT_WIDTH = 480
INDICATOR_WIDTH = 460
#: Height at the top of the screen kept for the indicator (a prompt goes below it when it fits).
INDICATOR_BAND = 112


#: How each toolkit capability reads in the prompt and on the indicator.
CAPABILITY_WORDS = {"chat": "chat with you", "files": "send and receive files", "clipboard": "share the clipboard",
                    "shell": "command shell"}


def capability_line(capabilities: Any) -> str:
    """The session's toolkit capabilities as words ("" for none); unknown entries are ignored."""
    if not isinstance(capabilities, list):
        return ""
    return ", ".join(CAPABILITY_WORDS[c] for c in capabilities if isinstance(c, str) and c in CAPABILITY_WORDS)


def people_line(viewers: list[Any], controller: Any) -> str:
    """"Watching: ann (controls), tia" — everyone in the session, each name cut to one short line."""
    names = [one_line(str(name), NAME_MAX) for name in viewers[:8]]
    boss = one_line(str(controller), NAME_MAX) if controller else ""
    shown = [f"{name} (controls)" if name == boss else name for name in names]
    return "Watching: " + (", ".join(shown) if shown else "nobody") + ("" if boss else " \u2014 nobody controls")


def _button(parent: tk.Misc, text: str, colour: str, command: Any, width: int = 0) -> tk.Button:
    """A flat button of one exact colour; ``width`` in characters (0: as wide as its text)."""
    return tk.Button(parent, text=text, command=command, bg=colour, activebackground=colour, fg="white",
                     activeforeground="white", font=("TkDefaultFont", 13, "bold"), width=width, padx=14, pady=10,
                     relief="flat", highlightthickness=0, bd=0)


def _place(root: tk.Tk, width: int, min_height: int, top: bool = False) -> None:
    """Size the window to its content (at least ``min_height``), within the screen, and place it.

    The indicator sits at the top; a prompt goes below the band the indicator uses when the
    screen has room, so an upgrade prompt never covers *End session*.
    """
    root.update_idletasks()  # the window is still withdrawn (main): it appears once, where it belongs
    screen_w, screen_h = root.winfo_screenwidth(), root.winfo_screenheight()
    width = min(max(width, root.winfo_reqwidth()), screen_w - 2 * SCREEN_MARGIN)
    height = min(max(min_height, root.winfo_reqheight()), screen_h - 2 * SCREEN_MARGIN)
    x = max(0, (screen_w - width) // 2)
    if top:
        y = SCREEN_MARGIN
    else:
        lowest = screen_h - SCREEN_MARGIN - height
        y = max(SCREEN_MARGIN, min(max(INDICATOR_BAND, (screen_h - height) // 3), lowest))
    root.geometry(f"{width}x{height}+{x}+{y}")
    root.deiconify()


def _label(parent: tk.Misc, text: str, size: int = 11, bold: bool = False, wrap: int = 440) -> tk.Label:
    return tk.Label(parent, text=text, font=("TkDefaultFont", size, "bold" if bold else "normal"),
                    wraplength=wrap, justify="left", anchor="w")


def _requested(buttons: dict[str, tk.Button]) -> dict[str, list[int]]:
    return {name: [b.winfo_reqwidth(), b.winfo_reqheight()] for name, b in buttons.items()}


def _width(root: tk.Tk, wanted: int) -> int:
    return min(wanted, root.winfo_screenwidth() - 2 * SCREEN_MARGIN)


def run_prompt(root: tk.Tk, spec: dict[str, Any]) -> None:
    """Who, view or control, why; Allow / Deny; no answer before the deadline = Deny."""
    root.title(PROMPT_TITLE)
    root.attributes("-topmost", True)
    width = _width(root, PROMPT_WIDTH)
    wrap = width - 40
    technician = one_line(str(spec.get("technician", "")), NAME_MAX) or "(unnamed technician)"
    reason = one_line(str(spec.get("reason") or ""), REASON_MAX)
    mode = "view and CONTROL (mouse and keyboard)" if spec["mode"] == "control" else "VIEW only"
    heading = "wants to take control of your session" if spec.get("upgrade") else "asks to access your screen"
    if spec.get("join"):
        heading = "asks to join the session and watch your screen"
    colleagues = tk.BooleanVar(root, value=False)
    deadline = time.monotonic() + float(spec["timeout_s"])
    answered = False

    def answer(allowed: bool, by: str) -> None:
        nonlocal answered
        if not answered:
            answered = True
            offered = {"colleagues": allowed and colleagues.get()} if spec.get("colleagues_option") else {}
            emit(event="answer", allowed=allowed, by=by, **offered)
            root.destroy()

    # Buttons and countdown first, at the bottom: the text above may be cut, never these.
    bar = tk.Frame(root)
    bar.pack(side="bottom", pady=(4, 12))
    buttons = {"Allow": _button(bar, "Allow", ALLOW_BG, lambda: answer(True, "user"), width=8),
               "Deny": _button(bar, "Deny", DENY_BG, lambda: answer(False, "user"), width=8)}
    for button in buttons.values():
        button.pack(side="left", padx=20)
    countdown = _label(root, "", wrap=wrap)
    countdown.pack(side="bottom", fill="x", padx=16, pady=(4, 0))
    _label(root, f"{technician} {heading}", 13, True, wrap).pack(fill="x", padx=16, pady=(14, 4))
    _label(root, f"Access: {mode}", wrap=wrap).pack(fill="x", padx=16)
    _label(root, f"Reason given by the technician: \u201c{reason}\u201d" if reason else "Reason: (none given)",
           wrap=wrap).pack(fill="x", padx=16)
    if spec.get("note"):
        _label(root, one_line(str(spec["note"]), REASON_MAX), wrap=wrap).pack(fill="x", padx=16)
    also = capability_line(spec.get("capabilities"))
    if also:
        _label(root, f"The technician may also: {also}", wrap=wrap).pack(fill="x", padx=16)
    if spec.get("colleagues_option"):
        # Unticked by default: each colleague is then a new question; ticked, they join without one.
        tk.Checkbutton(root, text="My helpdesk may bring colleagues (they can watch; you see who on the indicator)",
                       variable=colleagues, anchor="w", justify="left", wraplength=wrap, bg=COLLEAGUES_BG,
                       activebackground=COLLEAGUES_BG, fg="white", activeforeground="white", selectcolor="black",
                       highlightthickness=0, bd=0, padx=8, pady=6).pack(fill="x", padx=16, pady=(6, 0))
    root.protocol("WM_DELETE_WINDOW", lambda: answer(False, "user"))
    root.bind("<Escape>", lambda _e: answer(False, "user"))

    def tick() -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            answer(False, "timeout")
            return
        countdown.configure(text=f"Denied automatically in {left:.0f} s")
        root.after(min(250, int(left * 1000) + 1), tick)

    tick()
    _place(root, width, 260)
    emit(event="ready", buttons=_requested(buttons),
         shown={"technician": technician, "reason": reason, "heading": f"{technician} {heading}"})


def run_indicator(root: tk.Tk, spec: dict[str, Any]) -> None:
    """Technician, mode, elapsed time and an End session button; always on top."""
    root.title(INDICATOR_TITLE)
    root.attributes("-topmost", True)
    width = _width(root, INDICATOR_WIDTH)
    technician = one_line(str(spec.get("technician", "")), NAME_MAX) or "(unnamed technician)"
    started = time.monotonic()
    also = capability_line(spec.get("capabilities"))
    state = {"mode": str(spec["mode"]), "people": "", "lead": technician, "folder": ""}
    frame = tk.Frame(root)
    frame.pack(fill="x", padx=8, pady=6)  # not expanding: rows added under it (files) stay where they are
    ended = False

    def end() -> None:
        nonlocal ended
        if not ended:
            ended = True
            emit(event="end")

    # The button first: when the name is long it is the label that gives way, never End session.
    button = _button(frame, "End session", END_BG, end)
    button.pack(side="right", padx=(8, 0))
    chat = _ChatWindow(root, technician) if "chat" in (spec.get("capabilities") or []) else None
    chat_width = 0
    if chat is not None:
        chat_button = _button(frame, "Chat", CHAT_BG, lambda: chat.open(focus=True))
        chat_button.pack(side="right", padx=(8, 0))
        chat_width = chat_button.winfo_reqwidth() + 8
    last_note = {"text": ""}
    folder_label: tk.Label | None = None
    if "files" in (spec.get("capabilities") or []):
        # A row of its own, first (lines added to the text below never move it): where files from the technician
        # land (the agent says, and checks what the user picks here), and a small Save to… button.
        files_row = tk.Frame(root)
        files_row.pack(side="top", fill="x", padx=8, pady=(6, 0), before=frame)
        folder_button = _button(files_row, "Save to…", FOLDER_BG, lambda: _ask_folder(root, state["folder"]))
        folder_button.configure(font=("TkDefaultFont", 10, "bold"), padx=10, pady=3)
        folder_button.pack(side="right")
        folder_label = tk.Label(files_row, text="", font=("TkDefaultFont", 10), anchor="w")
        folder_label.pack(side="left", fill="x", expand=True)
    transfers = _TransferList(root)
    clipboard = _Clipboard(root)
    text = tk.Label(frame, text="", font=("TkDefaultFont", 11), anchor="w", justify="left",
                    wraplength=max(120, width - button.winfo_reqwidth() - chat_width - 40))
    text.pack(side="left", fill="x", expand=True)
    root.protocol("WM_DELETE_WINDOW", end)
    commands: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            try:
                commands.put(json.loads(line))
            except ValueError:
                continue
        commands.put(None)  # EOF: the agent is gone

    threading.Thread(target=read_stdin, daemon=True).start()

    def tick() -> None:
        while True:
            try:
                command = commands.get_nowait()
            except queue.Empty:
                break
            if command is None or command.get("cmd") == "close":
                root.destroy()
                return
            if command.get("cmd") == "mode" and command.get("mode") in ("view", "control"):
                state["mode"] = command["mode"]
            elif command.get("cmd") == "people" and isinstance(command.get("viewers"), list):
                state["people"] = people_line(command["viewers"], command.get("controller"))
                lead = command.get("controller") or (command["viewers"] or ["nobody"])[0]
                state["lead"] = one_line(str(lead), NAME_MAX)
                emit(event="people", shown=state["people"])
            elif command.get("cmd") == "chat" and chat is not None:
                chat.add(str(command.get("who", "")), str(command.get("text", "")))
            elif command.get("cmd") == "clipboard.set" and isinstance(command.get("text"), str):
                clipboard.put(command["text"])
            elif command.get("cmd") == "clipboard.watch":
                clipboard.watching = command.get("on") is True
            elif command.get("cmd") == "fetch" and isinstance(command.get("path"), str):
                _ask_fetch(root, technician, str(command.get("id", "")), command["path"],
                           float(command.get("timeout_s", 30)))
            elif command.get("cmd") == "note":
                last_note["text"] = one_line(str(command.get("text", "")), REASON_MAX)
                if chat is not None:
                    chat.add("", last_note["text"])
            elif command.get("cmd") == "folder" and isinstance(command.get("path"), str):
                state["folder"] = one_line(command["path"], 4096)
                if folder_label is not None:
                    folder_label.configure(text=f"Files you receive go to {_short_path(state['folder'])}")
            elif command.get("cmd") == "transfer" and isinstance(command.get("text"), str):
                transfers.add(command["text"])
        # Elapsed time in whole minutes: a seconds counter would repaint the user's screen every
        # second and so stream an update per second through an otherwise idle session.
        minutes = int(time.monotonic() - started) // 60
        what = "controlling" if state["mode"] == "control" else "viewing"
        kind = " (unattended access)" if spec.get("unattended") else ""
        since = "started less than a minute ago" if minutes == 0 else f"for {minutes} min"
        label = f"{state['lead']} is {what} your screen{kind}\n{since}"
        if also:
            label += f"\nmay also: {also}"
        if state["people"]:
            label += f"\n{state['people']}"
        if last_note["text"]:
            label += f"\n{last_note['text']}"
        if text.cget("text") != label:
            text.configure(text=label)
            _grow(root)
        root.after(100, tick)

    tick()
    clipboard.poll()
    _place(root, width, 64, top=True)
    emit(event="ready", buttons=_requested({"End session": button}), shown={"technician": technician})


def _ask_fetch(root: tk.Tk, technician: str, request_id: str, path: str, timeout_s: float) -> None:
    """Ask whether the technician may have a copy of ``path``: Allow / Deny, no answer in time = Deny.

    The agent suspends the technician's remote input from before this is asked until it is answered,
    so only the person at the device can click Allow.
    """
    window = tk.Toplevel(root)
    window.title(FETCH_TITLE)
    window.attributes("-topmost", True)
    deadline = time.monotonic() + max(1.0, min(timeout_s, 600.0))
    answered = False

    def answer(allowed: bool) -> None:
        nonlocal answered
        if not answered:
            answered = True
            emit(event="fetch", id=request_id, allowed=allowed)
            window.destroy()

    bar = tk.Frame(window)
    bar.pack(side="bottom", pady=(4, 12))
    _button(bar, "Allow", ALLOW_BG, lambda: answer(True), width=8).pack(side="left", padx=20)
    _button(bar, "Deny", DENY_BG, lambda: answer(False), width=8).pack(side="left", padx=20)
    countdown = _label(window, "", wrap=PROMPT_WIDTH - 40)
    countdown.pack(side="bottom", fill="x", padx=16)
    _label(window, f"{technician} asks for a copy of this file:", 13, True, PROMPT_WIDTH - 40).pack(
        fill="x", padx=16, pady=(14, 4))
    _label(window, one_line(path, 300), wrap=PROMPT_WIDTH - 40).pack(fill="x", padx=16)
    window.protocol("WM_DELETE_WINDOW", lambda: answer(False))

    def tick() -> None:
        if answered:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            answer(False)
            return
        countdown.configure(text=f"Denied automatically in {left:.0f} s")
        window.after(250, tick)

    tick()
    x = max(0, (root.winfo_screenwidth() - PROMPT_WIDTH) // 2)
    window.geometry(f"{PROMPT_WIDTH}x220+{x}+{INDICATOR_BAND}")


def _short_path(path: str, limit: int = 48) -> str:
    """``path`` with the home folder as ``~``, and only its end when long (the folder's own name stays)."""
    home = os.path.expanduser("~")
    if home not in ("", "/") and (path == home or path.startswith(home + "/")):
        path = "~" + path[len(home):]
    return path if len(path) <= limit else "…" + path[-(limit - 1):]


def _grow(root: tk.Tk) -> None:
    """Make the placed window tall enough for what it shows now (lines added later), where it is."""
    root.update_idletasks()
    if not root.winfo_viewable():
        return  # not placed yet: _place sizes it
    height = min(max(root.winfo_height(), root.winfo_reqheight()), root.winfo_screenheight() - 2 * SCREEN_MARGIN)
    if height != root.winfo_height():
        root.geometry(f"{root.winfo_width()}x{height}")


def _ask_folder(root: tk.Tk, current: str) -> None:
    """Let the user say where files from the technician go: a folder typed or browsed to, Downloads by default.

    The technician's remote input is suspended while this is open (``dialog`` events: the agent holds its
    prompt guard), so only the person at the device picks; the agent checks the folder before using it.
    """
    from tkinter import filedialog

    window = tk.Toplevel(root)
    window.title(FOLDER_TITLE)
    window.attributes("-topmost", True)
    emit(event="dialog", on=True)
    entry = tk.Entry(window, font=("TkDefaultFont", 12))
    done = False

    def finish(path: str) -> None:
        nonlocal done
        if not done:
            done = True
            window.destroy()
            emit(event="dialog", on=False)
            if path:
                emit(event="folder", path=path[:4096])

    def browse() -> None:
        chosen = filedialog.askdirectory(parent=window, title=FOLDER_TITLE, initialdir=entry.get() or current,
                                         mustexist=True)
        if chosen:
            entry.delete(0, "end")
            entry.insert(0, str(chosen))

    bar = tk.Frame(window)
    bar.pack(side="bottom", pady=(4, 12))
    _button(bar, "Save here", ALLOW_BG, lambda: finish(entry.get().strip()), width=8).pack(side="left", padx=8)
    _button(bar, "Browse…", BROWSE_BG, browse).pack(side="left", padx=8)
    _button(bar, "Cancel", DENY_BG, lambda: finish(""), width=8).pack(side="left", padx=8)
    _label(window, "Save files the technician sends you in this folder:", 13, True, PROMPT_WIDTH - 40).pack(
        fill="x", padx=16, pady=(14, 4))
    entry.pack(fill="x", padx=16)
    entry.insert(0, current)
    entry.bind("<Return>", lambda _e: finish(entry.get().strip()))
    window.protocol("WM_DELETE_WINDOW", lambda: finish(""))
    window.after(120_000, lambda: finish(""))  # forgotten: nothing changes
    x = max(0, (root.winfo_screenwidth() - PROMPT_WIDTH) // 2)
    window.geometry(f"{PROMPT_WIDTH}x200+{x}+{INDICATOR_BAND}")
    entry.focus_force()
    entry.select_range(0, "end")  # typing replaces the default
    entry.icursor("end")


class _TransferList:
    """Every file transfer of the session, oldest first, under the indicator's text (shown from the first on).

    Each line is inserted as text into a Listbox (never markup); ``transfers`` reports the whole list.
    """

    def __init__(self, root: tk.Tk) -> None:
        self.root = root
        self.lines: list[str] = []
        self.box: tk.Listbox | None = None

    def add(self, text: str) -> None:
        line = one_line(text, REASON_MAX)
        self.lines.append(line)
        if self.box is None:
            holder = tk.Frame(self.root)
            holder.pack(side="bottom", fill="x", padx=8, pady=(0, 6))
            scroll = tk.Scrollbar(holder, orient="vertical")
            self.box = tk.Listbox(holder, height=TRANSFER_ROWS, font=("TkDefaultFont", 10), activestyle="none",
                                  yscrollcommand=scroll.set)
            scroll.configure(command=self.box.yview)
            scroll.pack(side="right", fill="y")
            self.box.pack(side="left", fill="x", expand=True)
            _grow(self.root)
        self.box.insert("end", line)
        self.box.see("end")
        emit(event="transfers", shown=self.lines)


class _Clipboard:
    """The session's clipboard sync on the device, through Tk's own clipboard (no xclip needed).

    ``put`` sets the clipboard (the indicator then owns it until something else copies);
    while ``watching``, a change of the clipboard's text is reported as ``{"event": "clipboard"}``
    — never the text this window put there itself.
    """

    def __init__(self, root: tk.Tk) -> None:
        self.root = root
        self.watching = False
        self.last: str | None = None

    def _read(self) -> str | None:
        try:
            return str(self.root.clipboard_get())
        except tk.TclError:  # empty, or not text
            return None

    def put(self, text: str) -> None:
        self.root.clipboard_clear()
        self.root.clipboard_append(text[:CLIPBOARD_MAX])
        self.last = text[:CLIPBOARD_MAX]

    def poll(self) -> None:
        if self.watching:
            now = self._read()
            if now is not None and now != self.last:
                self.last = now
                emit(event="clipboard", text=now[:CLIPBOARD_MAX])
        else:
            self.last = self._read()  # switched on later: only changes from then on are sent
        self.root.after(CLIPBOARD_POLL_MS, self.poll)


class _ChatWindow:
    """The device user's side of the chat, opened from the indicator: the transcript as plain text, a line to type.

    Everything shown is inserted as text into a read-only Text widget (never markup), one line per
    message with control characters blanked; what the user types goes to the agent as an
    ``{"event": "chat"}`` line when they press Enter or Send.
    """

    def __init__(self, root: tk.Tk, technician: str) -> None:
        self.root, self.technician = root, technician
        self.window: tk.Toplevel | None = None
        self.log: tk.Text | None = None
        self.entry: tk.Entry | None = None
        self.lines: list[str] = []
        self.has_focus = False

    def open(self, focus: bool = False) -> None:
        """Show the window; take the keyboard only when the user asked for it (the Chat button)."""
        if self.window is not None:
            self.window.deiconify()
            self.window.lift()
            if focus and self.entry is not None:
                self.entry.focus_force()
            return
        window = tk.Toplevel(self.root)
        window.title(CHAT_TITLE)
        window.attributes("-topmost", True)
        window.protocol("WM_DELETE_WINDOW", self._close)
        bar = tk.Frame(window)
        bar.pack(side="bottom", fill="x", padx=8, pady=8)
        send = _button(bar, "Send", CHAT_BG, self._send)
        send.pack(side="right", padx=(8, 0))
        entry = tk.Entry(bar, font=("TkDefaultFont", 12))
        entry.pack(side="left", fill="x", expand=True)
        entry.bind("<Return>", lambda _e: self._send())
        log = tk.Text(window, height=12, width=48, wrap="word", font=("TkDefaultFont", 11))
        log.pack(fill="both", expand=True, padx=8, pady=(8, 0))
        self.window, self.log, self.entry = window, log, entry
        self._render()
        x = max(0, self.root.winfo_screenwidth() - 480 - SCREEN_MARGIN)
        # Bottom right, like a messenger: the indicator above grows (files row, transfer list, notes) and the chat
        # must never cover its buttons.
        y = max(INDICATOR_BAND, self.root.winfo_screenheight() - 320 - 4 * SCREEN_MARGIN)
        window.geometry(f"460x320+{x}+{y}")
        # While the user types here, the technician's remote input is suspended (the agent holds its prompt
        # guard): remote control must not be able to write the user's side of the chat.
        window.bind("<FocusIn>", lambda _e: self._focused(True))
        window.bind("<FocusOut>", lambda _e: window.after(50, self._check_focus))
        if focus:
            entry.focus_force()

    def _focused(self, on: bool) -> None:
        if on != self.has_focus:
            self.has_focus = on
            emit(event="chat_focus", on=on)

    def _check_focus(self) -> None:
        if self.window is None:
            return
        try:
            inside = self.root.focus_get()
        except (KeyError, tk.TclError):
            inside = None
        self._focused(inside is not None and inside.winfo_toplevel() is self.window)

    def _close(self) -> None:
        if self.window is not None:
            self.window.destroy()
        self.window = self.log = self.entry = None
        self._focused(False)

    def add(self, who: str, text: str) -> None:
        shown = " ".join(one_line(part, CHAT_MAX) for part in text.splitlines()) or "(empty)"
        self.lines = ([*self.lines, f"{one_line(who, NAME_MAX)}: {shown}" if who else f"• {shown}"])[-CHAT_LINES:]
        if self.window is None:
            self.open()
        else:
            self._render()

    def _render(self) -> None:
        if self.log is None:
            return
        self.log.configure(state="normal")
        self.log.delete("1.0", "end")
        self.log.insert("end", "\n".join(self.lines))
        self.log.configure(state="disabled")
        self.log.see("end")

    def _send(self) -> None:
        if self.entry is None:
            return
        line = self.entry.get().strip()[:CHAT_MAX]
        self.entry.delete(0, "end")
        if line:
            emit(event="chat", text=line)
            self.lines = ([*self.lines, f"You: {one_line(line, CHAT_MAX)}"])[-CHAT_LINES:]
            self._render()


def main(argv: list[str]) -> int:
    kind = argv[1] if len(argv) > 1 else ""
    if kind not in ("prompt", "indicator"):
        sys.stderr.write("usage: python -m agent.consent.tk_app prompt|indicator < spec.json\n")
        return 64
    spec = json.loads(sys.stdin.readline())
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        emit(event="error", message=f"display unavailable: {exc}")
        return EXIT_NO_DISPLAY
    root.withdraw()  # shown by _place once sized and placed: never a first frame somewhere else
    (run_prompt if kind == "prompt" else run_indicator)(root, spec)
    root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
