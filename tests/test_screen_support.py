"""Helpers for the screen/input end-to-end tests (no tests here).

* ``TkApp``: a Tk window on an Xvfb display, driven through stdin commands and
  reporting its events on stdout, started and killed by PID.
* ``serve_session``: a direct ``websockets.serve`` on 127.0.0.1 whose handler runs
  ``run_screen_session`` — the stand-in for the relay until it exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import websockets

from agent.screen import SessionStats, run_screen_session

TK_SCRIPT = r"""
import sys, tkinter as tk
root = tk.Tk()
W, H = int(sys.argv[1]), int(sys.argv[2])
root.geometry(f"{W}x{H}+0+0")
root.configure(bg="#203040")
c = tk.Canvas(root, width=W, height=H, highlightthickness=0, bg="#203040")
c.place(x=0, y=0)
c.create_rectangle(0, 0, 200, 150, fill="#ff0000", outline="")
c.create_rectangle(200, 0, 400, 150, fill="#00ff00", outline="")
c.create_rectangle(400, 0, 600, 150, fill="#0000ff", outline="")
for i in range(64):
    c.create_rectangle(i * 8, 160, i * 8 + 8, 220, fill="#%02x%02x%02x" % (i * 4, 255 - i * 4, (i * 37) % 256), outline="")
c.create_text(20, 240, text="Helpline lossless text check 0123456789", anchor="nw", fill="#ffffff", font=("Helvetica", 14))
probe = c.create_rectangle(640, 0, 704, 64, fill="#000000", outline="")
entry = tk.Entry(root, width=20, insertontime=0)
entry.place(x=20, y=300)
def clicked():
    print("clicked", flush=True)
button = tk.Button(root, text="Press me", command=clicked)
button.place(x=300, y=300)
def on_key(event):
    root.after_idle(lambda: print("entry", entry.get(), flush=True))
entry.bind("<KeyRelease>", on_key)
root.bind_all("<Button-4>", lambda event: print("wheel up", flush=True))
root.bind_all("<Button-5>", lambda event: print("wheel down", flush=True))
anim = {"on": False, "n": 0}
def animate():
    if anim["on"]:
        anim["n"] += 1
        c.itemconfigure(probe, fill="#%02x%02x%02x" % ((anim["n"] * 40) % 256, (anim["n"] * 90) % 256, 128))
        root.after(15, animate)
def command(line):
    cmd = line.split()
    if not cmd:
        return
    if cmd[0] == "fill":
        c.itemconfigure(probe, fill=cmd[1]); root.update_idletasks()
    elif cmd[0] == "animate":
        anim["on"] = cmd[1] == "on"; animate()
    elif cmd[0] == "focus":
        entry.focus_force()
    elif cmd[0] == "move":
        root.geometry(f"+{cmd[1]}+{cmd[2]}"); root.update()
    print("done", cmd[0], flush=True)
def on_stdin(fd, mask):
    line = sys.stdin.readline()
    if not line:
        root.destroy(); return
    command(line)
root.tk.createfilehandler(sys.stdin, tk.READABLE, on_stdin)
def ready():
    root.update()
    print("ready", flush=True)
root.after(50, ready)
root.mainloop()
"""


@dataclass
class TkApp:
    """A running Tk test window; ``lines`` collects what it printed."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    async def expect(self, predicate: Callable[[str], bool], timeout: float = 10.0, start: int = 0) -> str:
        """Read stdout until a line (from index ``start`` on) matches; deadline ``timeout``."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            for line in self.lines[start:]:
                if predicate(line):
                    return line
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise EOFError(f"Tk app exited; output so far: {self.lines}")
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if predicate(line):
                    return line

    async def command(self, text: str) -> None:
        """Send one command and wait until the app has applied it."""
        assert self.proc.stdin is not None
        start = len(self.lines)
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()
        name = text.split()[0]
        await self.expect(lambda line: line == f"done {name}", start=start)


@contextlib.asynccontextmanager
async def tk_app(display: str, width: int = 800, height: int = 400) -> AsyncIterator[TkApp]:
    """Start the Tk window on ``display``; killed by PID on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", TK_SCRIPT, str(width), str(height),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "DISPLAY": display},
    )
    app = TkApp(proc)
    try:
        await app.expect(lambda line: line == "ready", timeout=15)
        yield app
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()


@dataclass
class ServedSession:
    url: str
    stats: asyncio.Future[SessionStats]


@contextlib.asynccontextmanager
async def serve_session(mode: str, display: str, **kwargs: Any) -> AsyncIterator[ServedSession]:
    """A websocket server on 127.0.0.1 running one screen session per connection."""
    loop = asyncio.get_running_loop()
    stats: asyncio.Future[SessionStats] = loop.create_future()

    async def handler(ws: Any) -> None:
        result = await run_screen_session(ws, mode=mode, display=display, **kwargs)  # type: ignore[arg-type]
        if not stats.done():
            stats.set_result(result)

    async with websockets.serve(handler, "127.0.0.1", 0, max_size=1 << 20) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield ServedSession(f"ws://127.0.0.1:{port}/", stats)


def mouse_location(display: str) -> tuple[int, int]:
    """Pointer position as xdotool reports it."""
    out = subprocess.run(
        ["xdotool", "getmouselocation", "--shell"], env={**os.environ, "DISPLAY": display},
        capture_output=True, text=True, check=True, timeout=5,
    ).stdout
    values = dict(line.split("=", 1) for line in out.split())
    return int(values["X"]), int(values["Y"])


async def poll_until(check: Callable[[], bool], timeout: float, interval: float = 0.02) -> None:
    """Poll ``check`` until true or raise TimeoutError at the deadline."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(interval)
