"""The Get help window (Tk, in the ``helpline help`` process, as the user, on the user's display).

Top to bottom: what is wrong (one line, required; more details), how urgent, the screenshot as it
will be sent (scaled; *Include this screenshot* ticked — untick and nothing of the screen leaves;
with several monitors, one button per monitor picks which is shown — the one with the focused
window first — and only the one shown is sent),
what the agent already knows (diagnostics), **Send**. Below: the user's requests with their
status as the server last said it (``#12 printer offline — claimed by Ann``), *Add a note* and
*Withdraw* for the selected one; then the fixes the organisation approved for self-service, each
with inputs for its parameters within the signed limits and **Run**; after a run, its outcome and
*Didn't help — ask IT*, which sends a request with the attempt attached.

The screenshot is taken before the window appears, so the window is not in it. The socket is
read in a thread; Tk is touched only by the main thread (a queue, polled every 50 ms). Peer text
(a technician's name, notes) is shown one line, length-limited (:func:`agent.consent.text.one_line`).
With ``events=True`` the window prints JSON lines for tests (``ready``, ``sent``, ``requests``,
``fix``), as the consent prompt does.
"""

from __future__ import annotations

import base64
import functools
import json
import queue
import sys
import threading
import time
import tkinter as tk
from pathlib import Path
from typing import Any

from protocol.requests import FixAttempt

from ..consent.text import one_line
from . import wire
from .client import HelpClient, HelpUnavailable
from .shots import Shots
from .text import status_line

TITLE = "Helpline: get help"
#: Exact colours, so tests find the controls on screen like a user would.
SEND_BG = "#1f5fa8"
SUMMARY_BG = "#fff8dc"
NOTE_BG = "#2d6b3f"
NOTE_FIELD_BG = "#eaf3ff"
WITHDRAW_BG = "#8c2f2f"
RUN_BG = "#5b3f8c"
ESCALATE_BG = "#b3541e"
#: The monitor buttons (the one shown is sunken and darker).
SCREEN_BG = "#4a6b8a"
SCREEN_SHOWN_BG = "#23384d"
PREVIEW_WIDTH = 320
#: Seconds between attempts to reach the agent again after it went away.
RECONNECT_S = 2.0
URGENCY_WORDS = [("low", "Low — whenever"), ("normal", "Normal"), ("high", "High — I am blocked"),
                 ("critical", "Critical — many people are blocked")]


def _button(parent: tk.Misc, text: str, colour: str, command: Any) -> tk.Button:
    return tk.Button(parent, text=text, command=command, bg=colour, activebackground=colour, fg="white",
                     activeforeground="white", font=("TkDefaultFont", 11, "bold"), padx=10, pady=5, relief="flat",
                     highlightthickness=0, bd=0)


class HelpWindow:
    def __init__(self, root: tk.Tk, client: HelpClient, shots: Shots, *, events: bool = False) -> None:
        self.root, self.client, self.shots, self.events = root, client, shots, events
        #: Which monitor's screenshot is shown, hence the one sent.
        self.shown = shots.chosen
        self.screen_buttons: list[tk.Button] = []
        self.inbox: queue.Queue[wire.AgentMessage | Exception] = queue.Queue()
        self.pending: dict[int, str] = {}
        self.requests: list[wire.RequestView] = []
        self.fix_rows: dict[str, dict[str, Any]] = {}
        self.last_fix: wire.FixDone | None = None
        root.title(TITLE)
        self.body = tk.Frame(root, padx=12, pady=10)
        self.body.pack(fill="both", expand=True)
        self._form()
        self.status = tk.Label(self.body, text="", anchor="w", fg="#444444")
        self.status.pack(fill="x", pady=(4, 0))

    # --- layout -----------------------------------------------------------------------------

    def _form(self) -> None:
        b = self.body
        tk.Label(b, text="What is wrong?", font=("TkDefaultFont", 12, "bold"), anchor="w").pack(fill="x")
        self.summary = tk.Entry(b, width=60, bg=SUMMARY_BG, font=("TkDefaultFont", 11))
        self.summary.pack(fill="x")
        tk.Label(b, text="More details (optional)", anchor="w").pack(fill="x")
        self.details = tk.Text(b, width=60, height=3, font=("TkDefaultFont", 10))
        self.details.pack(fill="x")
        urgency_row = tk.Frame(b)
        urgency_row.pack(fill="x", pady=4)
        tk.Label(urgency_row, text="How urgent?").pack(side="left")
        self.urgency = tk.StringVar(self.root, value="normal")
        for value, words in URGENCY_WORDS:
            tk.Radiobutton(urgency_row, text=words, value=value, variable=self.urgency).pack(side="left")
        self.include = tk.BooleanVar(self.root, value=bool(self.screenshot))
        self.preview: tk.PhotoImage | None = None
        if self.screenshot:
            if len(self.shots.screens) > 1:
                chooser = tk.Frame(b)
                chooser.pack(fill="x", pady=(4, 0))
                tk.Label(chooser, text="Which screen?").pack(side="left")
                for index, shot_of in enumerate(self.shots.screens):
                    button = tk.Button(chooser, text=shot_of.label, fg="white", activeforeground="white",
                                       bg=SCREEN_BG, activebackground=SCREEN_BG, relief="raised", bd=2,
                                       highlightthickness=0, command=functools.partial(self.show_screen, index))
                    button.pack(side="left", padx=2)
                    self.screen_buttons.append(button)
            shot = tk.Frame(b)
            shot.pack(fill="x", pady=4)
            self.preview_label = tk.Label(shot, relief="sunken", bd=1)
            self.preview_label.pack(side="left")
            tk.Checkbutton(shot, text="Include this screenshot\n(exactly what IT will see)", variable=self.include,
                           justify="left").pack(side="left", padx=8)
            self.show_screen(self.shown)
        self.diagnostics = tk.Label(b, text="", anchor="w", justify="left", fg="#7a4b00")
        self.diagnostics.pack(fill="x")
        self.send_button = _button(b, "Send to IT support", SEND_BG, self.send)
        self.send_button.pack(anchor="e", pady=6)
        tk.Label(b, text="Your requests", font=("TkDefaultFont", 12, "bold"), anchor="w").pack(fill="x", pady=(6, 0))
        self.listbox = tk.Listbox(b, height=4, width=80, exportselection=False)
        self.listbox.pack(fill="x")
        note_row = tk.Frame(b)
        note_row.pack(fill="x", pady=4)
        self.note = tk.Entry(note_row, width=40, bg=NOTE_FIELD_BG)
        self.note.pack(side="left", fill="x", expand=True)
        _button(note_row, "Add a note", NOTE_BG, self.add_note).pack(side="left", padx=4)
        _button(note_row, "Withdraw", WITHDRAW_BG, self.withdraw).pack(side="left")
        self.fixes_frame = tk.Frame(b)
        self.fixes_frame.pack(fill="x", pady=(6, 0))
        self.fix_result = tk.Label(b, text="", anchor="w", justify="left", wraplength=560)
        self.fix_result.pack(fill="x")
        self.escalate_button = _button(b, "Didn't help — ask IT", ESCALATE_BG, self.escalate)

    @property
    def screenshot(self) -> bytes:
        """The screenshot shown now: the one that is sent when *Include* is ticked."""
        screens = self.shots.screens
        return screens[self.shown].png if screens else b""

    def show_screen(self, index: int) -> None:
        """Show monitor ``index``'s screenshot: from now on it is the one sent."""
        self.shown = index
        preview = tk.PhotoImage(data=base64.b64encode(self.screenshot).decode())
        factor = max(1, -(-preview.width() // PREVIEW_WIDTH))
        self.preview = preview.subsample(factor, factor)
        self.preview_label.config(image=self.preview)
        for i, button in enumerate(self.screen_buttons):
            colour = SCREEN_SHOWN_BG if i == index else SCREEN_BG
            button.config(relief="sunken" if i == index else "raised", bg=colour, activebackground=colour)
        if self.screen_buttons:
            self.emit("screen", shown=index, label=self.shots.screens[index].label, screenshot=len(self.screenshot))

    def show_state(self, state: wire.State) -> None:
        lines = [f"• {one_line(d.text, 100)}" for d in state.diagnostics]
        self.diagnostics.config(text="What Helpline noticed:\n" + "\n".join(lines) if lines else "")
        self.status.config(text="" if state.online else
                           "Not connected to IT right now: your request is sent as soon as it is.")
        for child in self.fixes_frame.winfo_children():  # a state after a reconnect replaces the list
            child.destroy()
        self.fix_rows.clear()
        if state.fixes:
            tk.Label(self.fixes_frame, text="Fix it yourself (approved by your IT)", font=("TkDefaultFont", 12, "bold"),
                     anchor="w").pack(fill="x")
        for fix in state.fixes:
            self._fix_row(fix)
        self.show_requests(state.requests)

    def _fix_row(self, fix: wire.FixView) -> None:
        row = tk.Frame(self.fixes_frame)
        row.pack(fill="x", pady=2)
        tk.Label(row, text=f"{one_line(fix.title, 60)} ({fix.budget})", anchor="w").pack(side="left")
        inputs: dict[str, tuple[wire.ParamView, tk.Variable]] = {}
        for param in fix.params:
            tk.Label(row, text=one_line(param.name, 30) + ":").pack(side="left", padx=(6, 0))
            var: tk.Variable
            if param.type == "bool":
                var = tk.BooleanVar(self.root, value=False)
                tk.Checkbutton(row, variable=var).pack(side="left")
            elif param.choices:
                var = tk.StringVar(self.root, value=str(param.choices[0]))
                tk.OptionMenu(row, var, *[str(c) for c in param.choices]).pack(side="left")
            else:
                default = param.minimum if param.minimum is not None and param.type != "str" else ""
                var = tk.StringVar(self.root, value=str(int(default) if param.type == "int" and default != ""
                                                        else default))
                tk.Entry(row, textvariable=var, width=14).pack(side="left")
            inputs[param.name] = (param, var)
        _button(row, "Run", RUN_BG, lambda f=fix: self.run_fix(f)).pack(side="right")
        self.fix_rows[fix.fix_id] = {"view": fix, "inputs": inputs}

    def show_requests(self, views: list[wire.RequestView]) -> None:
        selected = self._selected()
        self.requests = list(views)
        self.listbox.delete(0, "end")
        for view in self.requests:
            self.listbox.insert("end", status_line(view))
        index = next((i for i, v in enumerate(self.requests) if selected and v.local_id == selected.local_id), 0)
        if self.requests:
            self.listbox.selection_set(index)
        self.emit("requests", requests=[{"local_id": v.local_id, "state": v.state, "number": v.number,
                                         "claimed_by": v.claimed_by, "line": status_line(v)} for v in views])

    # --- actions ------------------------------------------------------------------------------

    def _call(self, message: wire.WireMessage, what: str) -> None:
        self.pending[getattr(message, "call", 0)] = what
        try:
            self.client.send(message)
        except OSError as exc:
            self.status.config(text=f"The Helpline agent does not answer: {exc}")

    def send(self, attempt: FixAttempt | None = None, summary: str = "") -> None:
        summary = " ".join((summary or self.summary.get()).split())[:200]
        if not summary:
            self.status.config(text="Please say in a few words what is wrong.")
            self.summary.focus_set()
            return
        details = self.details.get("1.0", "end").strip()[:4000]
        shot = self.screenshot if self.include.get() and self.screenshot else None
        self._call(wire.Open(call=self.client.number(), summary=summary, details=details,
                             urgency=self.urgency.get(), screenshot=shot, attempt=attempt), "open")  # type: ignore[arg-type]
        self.status.config(text="Sending…")

    def _selected(self) -> wire.RequestView | None:
        picked: tuple[int, ...] = tuple(self.listbox.curselection())  # type: ignore[no-untyped-call]
        if picked and picked[0] < len(self.requests):
            view: wire.RequestView = self.requests[picked[0]]
            return view
        return self.requests[0] if self.requests else None

    def add_note(self) -> None:
        target, text = self._selected(), self.note.get().strip()[:4000]
        if target is None or not text:
            self.status.config(text="Write a note and pick one of your requests.")
            return
        self._call(wire.Add(call=self.client.number(), local_id=target.local_id, text=text), "note")
        self.note.delete(0, "end")

    def withdraw(self) -> None:
        target = self._selected()
        if target is not None:
            self._call(wire.Withdraw(call=self.client.number(), local_id=target.local_id), "withdraw")

    def run_fix(self, fix: wire.FixView) -> None:
        params: dict[str, Any] = {}
        for name, (param, var) in self.fix_rows[fix.fix_id]["inputs"].items():
            raw = var.get()
            if param.type == "bool":
                params[name] = bool(raw)
                continue
            if raw == "" and not param.required:
                continue
            try:
                params[name] = int(raw) if param.type == "int" else float(raw) if param.type == "float" else str(raw)
            except ValueError:
                self.status.config(text=f"{name} must be a {param.type}")
                return
        self.escalate_button.pack_forget()
        self.fix_result.config(text=f"Running “{one_line(fix.title, 60)}”…")
        self._call(wire.RunFix(call=self.client.number(), fix_id=fix.fix_id, params=params), "fix")

    def escalate(self) -> None:
        done = self.last_fix
        if done is None:
            return
        attempt = FixAttempt(fix_id=done.fix_id, title=done.title, outcome="didnt_help" if done.ok else "failed",
                             detail=done.detail)
        self.send(attempt, summary=self.summary.get() or f"{done.title}: did not fix my problem")
        self.escalate_button.pack_forget()

    # --- replies ------------------------------------------------------------------------------

    def emit(self, event: str, **fields: Any) -> None:
        if self.events:
            sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
            sys.stdout.flush()

    def poll(self) -> None:
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Exception):
                self.status.config(text=f"The Helpline agent went away: {item}")
                self.emit("lost", reason=str(item))
                continue
            self.handle(item)
        self.root.after(50, self.poll)

    def handle(self, reply: wire.AgentMessage) -> None:
        what = self.pending.pop(reply.call, "") if reply.call else ""
        if isinstance(reply, wire.State):
            self.show_state(reply)
            self.emit("ready", user=reply.user, fixes=[f.fix_id for f in reply.fixes],
                      diagnostics=[d.code for d in reply.diagnostics], screenshot=len(self.screenshot),
                      screens=[shot.label for shot in self.shots.screens], shown=self.shown, title=TITLE)
            # The state carries the requests too: the answer to Watch may arrive first (the state waits for the
            # diagnostics), so the list shown is always the newest the agent answered with.
            self.show_requests(reply.requests)
        elif isinstance(reply, wire.Requests):
            self.show_requests(reply.requests)
        elif isinstance(reply, wire.Opened):
            self.status.config(text="Sent. IT support will get back to you; you can follow it below.")
            self.summary.delete(0, "end")
            self.details.delete("1.0", "end")
            self.emit("sent", local_id=reply.local_id)
        elif isinstance(reply, wire.FixDone):
            self.last_fix = reply
            verdict = "Done" if reply.ok else "It did not work"
            self.fix_result.config(text=f"{verdict}: {one_line(reply.detail, 300)}")
            self.escalate_button.config(text="Didn't help — ask IT" if reply.ok else "Ask IT about it")
            self.escalate_button.pack(anchor="e", pady=4)
            self.emit("fix", fix_id=reply.fix_id, ok=reply.ok, detail=reply.detail)
        elif isinstance(reply, wire.Failed):
            self.status.config(text=f"Not done: {one_line(reply.reason, 200)}")
            if what == "fix":
                self.fix_result.config(text=f"Not run: {one_line(reply.reason, 300)}")
            self.emit("failed", what=what, reason=reply.reason)
        elif isinstance(reply, wire.Done):
            self.status.config(text={"note": "Note added.", "withdraw": "Request withdrawn."}.get(what, "Done."))
            self.emit("done", what=what)

    def read_forever(self) -> None:
        """The socket reader thread: replies and pushes into the queue. When the agent goes away (a restart,
        an update, the helper reconnecting) it connects again every few seconds and asks for the state and
        updates afresh, so the window shows the status the server sends the agent on reconnect."""
        while True:
            try:
                while True:
                    self.inbox.put(self.client.read())
            except (OSError, HelpUnavailable) as exc:
                self.inbox.put(exc)
            while True:
                time.sleep(RECONNECT_S)
                try:
                    client = HelpClient(self.client.path, timeout_s=None)
                except HelpUnavailable:
                    continue
                self.client = client
                try:
                    self.client.send(wire.GetState(call=self.client.number()))
                    self.client.send(wire.Watch(call=self.client.number()))
                except OSError:
                    continue
                break


def run_window(path: Path, display: str | None, *, events: bool = False, screenshot: bool = True) -> int:
    """Capture the screen, open the window; returns when the user closes it."""
    shots = Shots([])
    if screenshot:
        from .screenshot import capture_all

        try:
            shots = capture_all(display)
        except Exception as exc:  # no screenshot is no reason to refuse help
            print(f"helpline: no screenshot: {type(exc).__name__}: {exc}", file=sys.stderr)
    client = HelpClient(path, timeout_s=None)
    try:
        root = tk.Tk(screenName=display) if display else tk.Tk()
    except tk.TclError as exc:
        client.close()
        print(f"helpline: cannot open a window on {display or '$DISPLAY'}: {exc}", file=sys.stderr)
        return 2
    window = HelpWindow(root, client, shots, events=events)
    threading.Thread(target=window.read_forever, daemon=True, name="help-socket").start()
    window._call(wire.GetState(call=client.number()), "state")
    window._call(wire.Watch(call=client.number()), "watch")
    window.summary.focus_set()
    root.after(50, window.poll)
    try:
        root.mainloop()
    finally:
        client.close()
    return 0
