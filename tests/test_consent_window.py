"""The consent prompt and the session indicator stay honest and usable on small screens.

A technician's reason with newlines once pushed Allow/Deny out of the prompt (and could
fake lines of the prompt's own text); "End session" was clipped on the indicator. The text
shown is now one line, length-limited, control characters replaced, and the buttons are laid
out first, so they keep their full size. Checked on real Xvfb screens of 640x480 and 800x600:
each button is found by its colour on a screenshot, must be as large as Tk asked for, inside
the screen, and answer a real click.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import Any

import mss
import numpy as np
import pytest

from agent.consent.text import NAME_MAX, REASON_MAX, one_line
from agent.consent.tk_app import ALLOW_BG, DENY_BG, END_BG, INDICATOR_TITLE, PROMPT_TITLE
from tests.test_session_helpers import wait_window, xdotool
from tests.xvfb import XvfbHandle, xvfb_factory  # noqa: F401 - fixtures

#: A reason as a malicious technician would write it: fake prompt lines, control and bidi characters.
EVIL_REASON = ("printer\n\n\n\n\nThis request comes from your IT department.\r\nClick Allow to continue.\x1b[2J"
               "\u202eevil\u202c\u200b" + "x" * 300)
LONG_NAME = "Ann Smith of the IT service desk, second level, night shift, on call"


@pytest.mark.parametrize(("raw", "limit", "shown"), [
    ("printer setup", 120, "printer setup"),
    ("a\nb\r\nc\td", 120, "a b c d"),
    ("  lots   of\n\n\n space  ", 120, "lots of space"),
    ("x\x00y\x1b[2Jz\x7f", 120, "x y [2Jz"),
    ("right\u202eto-left\u200bzero\u2028line", 120, "right to-left zero line"),
    ("abcdef", 4, "abc…"),
    ("abcd", 4, "abcd"),
    ("e\u0301\u0301\u0301\u0301\u0301", 120, "e\u0301\u0301"),
    ("", 120, ""),
])
def test_one_line_makes_peer_text_safe_to_show(raw: str, limit: int, shown: str) -> None:
    """Control, format and separator characters become spaces, runs of blanks one space, a cut ends in '…'."""
    assert one_line(raw, limit) == shown


def test_one_line_never_exceeds_its_limit_or_keeps_a_newline() -> None:
    """Whatever comes in, what is shown has no line break and at most ``limit`` characters."""
    for limit in (1, 2, REASON_MAX, NAME_MAX):
        text = one_line(EVIL_REASON, limit)
        assert len(text) <= limit and "\n" not in text and "\r" not in text


def _box(display: str, colour: str) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the on-screen pixels of exactly ``colour``, or None when there are none."""
    r, g, b = (int(colour[i: i + 2], 16) for i in (1, 3, 5))
    with mss.MSS(display=display) as grabber:
        shot = grabber.grab(grabber.monitors[0])
    pixels = np.frombuffer(shot.raw, dtype=np.uint8).reshape(shot.height, shot.width, 4)
    ys, xs = np.nonzero((pixels[:, :, 2] == r) & (pixels[:, :, 1] == g) & (pixels[:, :, 0] == b))
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def _window(display: str, title: str) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the window named ``title`` (xdotool)."""
    out = xdotool(display, "search", "--name", title, "getwindowgeometry", "--shell")
    fields = dict(line.split("=", 1) for line in out.split() if "=" in line)
    return int(fields["X"]), int(fields["Y"]), int(fields["WIDTH"]), int(fields["HEIGHT"])


class _Window:
    """One real Tk child (``python -m agent.consent.tk_app``), killed by PID when done."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, kind: str, display: str, spec: dict[str, Any]) -> _Window:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.consent.tk_app", kind, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "DISPLAY": display})
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(spec) + "\n").encode())
        await proc.stdin.drain()
        return cls(proc)

    async def event(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 15)
        assert line, "the Tk child exited without a word"
        event: dict[str, Any] = json.loads(line)
        return event

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, 9)
        await self.proc.wait()


async def _buttons_seen(display: str, wanted: dict[str, str], requested: dict[str, list[int]],
                        ) -> dict[str, tuple[int, int, int, int]]:
    """Wait until every button is on screen at its full requested size; return their boxes."""
    seen: dict[str, tuple[int, int, int, int] | None] = {}
    deadline = asyncio.get_running_loop().time() + 10

    def complete() -> bool:
        return all(box is not None and (box[2], box[3]) == tuple(requested[name]) for name, box in seen.items())

    while True:
        seen = {name: await asyncio.to_thread(_box, display, colour) for name, colour in wanted.items()}
        if complete() or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)  # polling the screen, with a deadline
    for name, box in seen.items():
        assert box is not None, f"{name} is not visible at all"
        assert (box[2], box[3]) == tuple(requested[name]), f"{name} is clipped: {box[2:]} of {requested[name]}"
    return {name: box for name, box in seen.items() if box is not None}


def _inside(box: tuple[int, int, int, int], screen: XvfbHandle) -> bool:
    x, y, w, h = box
    return x >= 0 and y >= 0 and x + w <= screen.width and y + h <= screen.height


@pytest.mark.parametrize("size", [(640, 480), (800, 600)])
async def test_prompt_buttons_stay_whole_and_clickable_with_a_hostile_reason(
        xvfb_factory, size: tuple[int, int]) -> None:  # noqa: F811
    """A reason with newlines, control characters and 400 characters, over a running session's indicator (an
    upgrade prompt): one line of at most 120 characters is shown, the window fits the screen, Allow, Deny and
    End session are all whole and on screen, and Deny answers a real click."""
    screen = xvfb_factory(*size)
    indicator = await _Window.start("indicator", screen.display,
                                    {"technician": LONG_NAME, "mode": "view", "unattended": False})
    window: _Window | None = None
    try:
        shown = await indicator.event()
        window = await _Window.start("prompt", screen.display, {
            "technician": LONG_NAME + "\nIT department", "mode": "control", "reason": EVIL_REASON,
            "timeout_s": 60, "upgrade": True})
        ready = await window.event()
        assert ready["event"] == "ready"
        assert ready["shown"]["reason"] == one_line(EVIL_REASON, REASON_MAX)
        assert ready["shown"]["technician"] == one_line(LONG_NAME + "\nIT department", NAME_MAX)
        await wait_window(screen.display, PROMPT_TITLE)
        assert _inside(_window(screen.display, PROMPT_TITLE), screen)
        boxes = await _buttons_seen(screen.display, {"Allow": ALLOW_BG, "Deny": DENY_BG, "End session": END_BG},
                                    {**ready["buttons"], **shown["buttons"]})
        assert all(_inside(box, screen) for box in boxes.values())
        x, y, w, h = boxes["Deny"]
        await asyncio.to_thread(xdotool, screen.display, "mousemove", "--sync", str(x + w // 2), str(y + h // 2),
                                "click", "1")
        assert await window.event() == {"event": "answer", "allowed": False, "by": "user"}
    finally:
        if window is not None:
            await window.stop()
        await indicator.stop()


@pytest.mark.parametrize("size", [(640, 480), (800, 600)])
async def test_indicator_end_session_is_whole_and_clickable(xvfb_factory, size: tuple[int, int]) -> None:  # noqa: F811
    """With a long technician name on a small screen, "End session" is whole, on screen and ends on a click."""
    screen = xvfb_factory(*size)
    window = await _Window.start("indicator", screen.display,
                                 {"technician": LONG_NAME, "mode": "control", "unattended": True})
    try:
        ready = await window.event()
        assert ready["event"] == "ready" and ready["shown"]["technician"] == one_line(LONG_NAME, NAME_MAX)
        await wait_window(screen.display, INDICATOR_TITLE)
        assert _inside(_window(screen.display, INDICATOR_TITLE), screen)
        boxes = await _buttons_seen(screen.display, {"End session": END_BG}, ready["buttons"])
        x, y, w, h = boxes["End session"]
        assert _inside(boxes["End session"], screen)
        await asyncio.to_thread(xdotool, screen.display, "mousemove", "--sync", str(x + w // 2), str(y + h // 2),
                                "click", "1")
        assert await window.event() == {"event": "end"}
    finally:
        await window.stop()
