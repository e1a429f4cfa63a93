"""The CSAT survey window (issue 19), a Tk child process: ``python -m agent.help.survey_window``.

Tk must own its process's main thread, so the agent starts this with ``DISPLAY`` set, writes the
survey (``{"number", "summary", "technician"}``) as one JSON line on stdin and reads one line
back: ``{"event": "ready"}`` once shown, then ``{"event": "answer", "score": 1..5, "comment"}``
or ``{"event": "dismissed"}`` (Not now, the window closed). Text from the server is shown as one
length-limited line; the buttons are packed first so a long summary never hides them.
"""

from __future__ import annotations

import json
import sys
import tkinter as tk
from typing import Any

from agent.consent.text import one_line

TITLE = "Helpline: how did we do?"
#: Exact colours so a test finds the buttons on screen like a person would.
SEND_BG = "#1b7f3a"
LATER_BG = "#4d5d6e"
SCORE_BG = "#1f5fa8"
MAX_COMMENT = 1000
EXIT_NO_DISPLAY = 2
LABELS = {1: "1 — very unhappy", 2: "2", 3: "3", 4: "4", 5: "5 — very happy"}


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def run(root: tk.Tk, spec: dict[str, Any]) -> None:
    root.title(TITLE)
    root.attributes("-topmost", True)
    score = tk.IntVar(value=0)
    done = {"sent": False}

    def finish(event: dict[str, Any]) -> None:
        if not done["sent"]:
            done["sent"] = True
            emit(**event)
        root.destroy()

    def send() -> None:
        if score.get() in LABELS:
            finish({"event": "answer", "score": score.get(), "comment": comment.get("1.0", "end-1c")[:MAX_COMMENT]})

    buttons = tk.Frame(root)
    buttons.pack(side="bottom", fill="x", padx=10, pady=8)
    send_button = tk.Button(buttons, text="Send", bg=SEND_BG, fg="white", activebackground=SEND_BG,
                            state="disabled", command=send)
    send_button.pack(side="right")
    tk.Button(buttons, text="Not now", bg=LATER_BG, fg="white", activebackground=LATER_BG,
              command=lambda: finish({"event": "dismissed"})).pack(side="right", padx=6)
    number = int(spec.get("number", 0))
    summary = one_line(str(spec.get("summary", "")), 80)
    technician = one_line(str(spec.get("technician", "")), 60)
    tk.Label(root, text=f"Your request #{number} was resolved: {summary}", anchor="w").pack(fill="x", padx=10,
                                                                                          pady=(10, 0))
    if technician:
        tk.Label(root, text=f"Helped by {technician}.", anchor="w").pack(fill="x", padx=10)
    tk.Label(root, text="How satisfied are you?", anchor="w").pack(fill="x", padx=10, pady=(8, 2))
    scores = tk.Frame(root)
    scores.pack(fill="x", padx=10)
    for value, label in LABELS.items():
        tk.Radiobutton(scores, text=label, value=value, variable=score, indicatoron=False, bg=SCORE_BG, fg="white",
                       selectcolor="#0b3d75", width=4 if value in (2, 3, 4) else 17,
                       command=lambda: send_button.configure(state="normal")).pack(side="left", padx=2)
    tk.Label(root, text=f"Comment (optional, up to {MAX_COMMENT} characters):", anchor="w").pack(
        fill="x", padx=10, pady=(8, 2))
    comment = tk.Text(root, height=4, width=60, wrap="word")
    comment.pack(fill="both", expand=True, padx=10)
    root.protocol("WM_DELETE_WINDOW", lambda: finish({"event": "dismissed"}))
    root.update_idletasks()
    root.deiconify()
    emit(event="ready")
    comment.focus_set()


def main() -> int:
    spec = json.loads(sys.stdin.readline() or "{}")
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        emit(event="error", message=f"display unavailable: {exc}")
        return EXIT_NO_DISPLAY
    root.withdraw()
    run(root, spec if isinstance(spec, dict) else {})
    root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
