"""The Tk consent prompt and session indicator, run as a child process per window.

Tk is not thread-safe and must own its process's main thread, so the agent starts
``python -m agent.consent.tk_app prompt|indicator`` with ``DISPLAY`` set and speaks JSON
lines: the first stdin line is the window's content; stdout reports ``ready``, then
``answer`` (prompt) or ``end`` (indicator's *End session* button). The indicator obeys
``{"cmd": "mode"|"close"}`` lines and exits when stdin closes (the agent went away).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
import tkinter as tk
from typing import Any

PROMPT_TITLE = "Helpline: remote support request"
INDICATOR_TITLE = "Helpline: remote session in progress"
#: Button colours (exact, so a test can find the buttons on screen like a user would).
ALLOW_BG = "#1b7f3a"
DENY_BG = "#a31515"
END_BG = "#d9480f"
EXIT_NO_DISPLAY = 2


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _button(parent: tk.Misc, text: str, colour: str, command: Any) -> tk.Button:
    return tk.Button(parent, text=text, command=command, bg=colour, activebackground=colour, fg="white",
                     activeforeground="white", font=("TkDefaultFont", 13, "bold"), width=10, height=2,
                     relief="flat", highlightthickness=0, bd=0)


def _centre(root: tk.Tk, width: int, height: int, top: bool = False) -> None:
    x = max(0, (root.winfo_screenwidth() - width) // 2)
    y = 10 if top else max(0, (root.winfo_screenheight() - height) // 3)
    root.geometry(f"{width}x{height}+{x}+{y}")


def _label(parent: tk.Misc, text: str, size: int = 11, bold: bool = False) -> tk.Label:
    return tk.Label(parent, text=text, font=("TkDefaultFont", size, "bold" if bold else "normal"),
                    wraplength=440, justify="left", anchor="w")


def run_prompt(root: tk.Tk, spec: dict[str, Any]) -> None:
    """Who, view or control, why; Allow / Deny; no answer before the deadline = Deny."""
    root.title(PROMPT_TITLE)
    _centre(root, 480, 260)
    root.attributes("-topmost", True)
    mode = "view and CONTROL (mouse and keyboard)" if spec["mode"] == "control" else "VIEW only"
    heading = "wants to take control of your session" if spec.get("upgrade") else "asks to access your screen"
    _label(root, f"{spec['technician']} {heading}", 13, True).pack(fill="x", padx=16, pady=(14, 4))
    _label(root, f"Access: {mode}").pack(fill="x", padx=16)
    _label(root, f"Reason: {spec.get('reason') or '(none given)'}").pack(fill="x", padx=16)
    if spec.get("note"):
        _label(root, spec["note"]).pack(fill="x", padx=16)
    countdown = _label(root, "")
    countdown.pack(fill="x", padx=16, pady=(4, 8))
    deadline = time.monotonic() + float(spec["timeout_s"])
    answered = False

    def answer(allowed: bool, by: str) -> None:
        nonlocal answered
        if not answered:
            answered = True
            emit(event="answer", allowed=allowed, by=by)
            root.destroy()

    buttons = tk.Frame(root)
    buttons.pack(pady=4)
    _button(buttons, "Allow", ALLOW_BG, lambda: answer(True, "user")).pack(side="left", padx=20)
    _button(buttons, "Deny", DENY_BG, lambda: answer(False, "user")).pack(side="left", padx=20)
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
    root.update_idletasks()
    emit(event="ready")


def run_indicator(root: tk.Tk, spec: dict[str, Any]) -> None:
    """Technician, mode, elapsed time and an End session button; always on top."""
    root.title(INDICATOR_TITLE)
    _centre(root, 460, 64, top=True)
    root.attributes("-topmost", True)
    started = time.monotonic()
    state = {"mode": str(spec["mode"])}
    frame = tk.Frame(root)
    frame.pack(fill="both", expand=True, padx=8, pady=6)
    text = tk.Label(frame, text="", font=("TkDefaultFont", 11), anchor="w", justify="left")
    text.pack(side="left", fill="x", expand=True)
    ended = False

    def end() -> None:
        nonlocal ended
        if not ended:
            ended = True
            emit(event="end")

    _button(frame, "End session", END_BG, end).pack(side="right")
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
        # Elapsed time in whole minutes: a seconds counter would repaint the user's screen every
        # second and so stream an update per second through an otherwise idle session.
        minutes = int(time.monotonic() - started) // 60
        what = "controlling" if state["mode"] == "control" else "viewing"
        kind = " (unattended access)" if spec.get("unattended") else ""
        since = "started less than a minute ago" if minutes == 0 else f"for {minutes} min"
        label = f"{spec['technician']} is {what} your screen{kind}\n{since}"
        if text.cget("text") != label:
            text.configure(text=label)
        root.after(100, tick)

    tick()
    root.update_idletasks()
    emit(event="ready")


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
    (run_prompt if kind == "prompt" else run_indicator)(root, spec)
    root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
