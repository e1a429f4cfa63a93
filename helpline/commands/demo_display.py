"""Demo step: a screen for the agent on a machine without a desktop.

With no ``DISPLAY`` but Xvfb installed, ``helpline demo`` starts ``Xvfb :N`` with a small Tk
sample window. Nobody logs in to an Xvfb, so the demo's agent configuration names
:data:`SESSION_USER` as the user sitting at it (``AgentConfig.session_user``): without that the
agent would refuse every attended session with "nobody is logged in to ask for consent".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: The user the demo's agent counts as logged in at its Xvfb.
SESSION_USER = "demo"
XVFB_SIZE = (1280, 800)
READY_TIMEOUT_S = 10.0
#: Where every X server puts its lock file and socket (fixed by X11, not a temp file we create).
X11_TMP = Path("/tmp")  # noqa: S108
SAMPLE_TITLE = "Helpline demo desktop"
#: The sample window's background colour and geometry (width, height, x, y) — what a viewer should show.
SAMPLE_BG = "#f4f6fa"
SAMPLE_GEOMETRY = (640, 360, 300, 200)
_GEOMETRY = "{}x{}+{}+{}".format(*SAMPLE_GEOMETRY)

SAMPLE_WINDOW = f"""
import time, tkinter as tk
root = tk.Tk(); root.title({SAMPLE_TITLE!r}); root.geometry({_GEOMETRY!r})
root.configure(bg={SAMPLE_BG!r})
tk.Label(root, text="This is the device's screen", font=("DejaVu Sans", 20, "bold"), bg={SAMPLE_BG!r}).pack(pady=24)
clock = tk.Label(root, font=("DejaVu Sans Mono", 28), bg={SAMPLE_BG!r}); clock.pack()
entry = tk.Entry(root, font=("DejaVu Sans", 14), width=32); entry.pack(pady=20); entry.insert(0, "type here remotely")
def tick():
    clock.config(text=time.strftime("%H:%M:%S")); root.after(500, tick)
tick(); root.mainloop()
"""


def start_display(data: Path, children: list[subprocess.Popen[bytes]], step: Callable[[str], None]) -> str | None:
    """Start Xvfb and the sample window when the machine has no display; return the display started (":N")."""
    if os.environ.get("DISPLAY"):
        return None
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        step("no display and no Xvfb: remote sessions need a display (apt-get install xvfb xdotool python3-tk)")
        return None
    display = _free_display()
    logs = data / "logs"
    width, height = XVFB_SIZE
    step(f"no display: starting Xvfb {display} ({width}x{height}) with a sample window; the agent counts "
         f"user '{SESSION_USER}' as logged in there")
    with (logs / "xvfb.log").open("ab") as log:
        children.append(subprocess.Popen([xvfb, display, "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp",
                                          "-noreset"], stdout=subprocess.DEVNULL, stderr=log))
    if not _wait_socket(display):
        step(f"Xvfb {display} did not come up; see {logs}/xvfb.log")
        return None
    with (logs / "sample-window.log").open("ab") as log:
        children.append(subprocess.Popen([sys.executable, "-c", SAMPLE_WINDOW], env={**os.environ, "DISPLAY": display},
                                         stdout=subprocess.DEVNULL, stderr=log))
    return display


def _free_display() -> str:
    for n in range(90, 200):
        if not (X11_TMP / f".X{n}-lock").exists() and not (X11_TMP / ".X11-unix" / f"X{n}").exists():
            return f":{n}"
    raise RuntimeError("no free X display number between :90 and :199")


def _wait_socket(display: str) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    sock = X11_TMP / ".X11-unix" / f"X{display.lstrip(':')}"
    while time.monotonic() < deadline:
        if sock.exists():
            return True
        time.sleep(0.05)  # polling a file with a deadline
    return False
