"""Get help with several monitors (issue 18): a screenshot per monitor, the focused one shown first, the user picks.

A real Xvfb with two RandR monitors of different widths (640 and 960 px, so the PNG's size names the monitor), a
Tk window on the right one holding the X input focus; ``helpline help`` (its own process) against a real agent and
server. The window shows the right monitor's screenshot first and sends it; after the user clicks the other
monitor's button (xdotool), the next request carries the left one's. Only what is shown is sent.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

from agent.help.screenshot import focus_point, monitor_at
from agent.help.shots import Shot, Shots
from agent.help.window import SCREEN_BG, SEND_BG, SUMMARY_BG, TITLE
from agent.screen.capture import Monitor
from tests.harness import wait_until
from tests.test_help_request import _events, _raw, desk, help_window, next_event, png_size, requests_of
from tests.test_screen_support import tk_app
from tests.test_session_helpers import click_colour, wait_window, xdotool
from tests.xvfb import start_xvfb

LEFT, RIGHT = (0, 0, 640, 600), (640, 0, 960, 600)


def test_the_focused_point_picks_its_monitor() -> None:
    """Monitor lookup by point (mss numbering: 0 is the union); outside every monitor is None; Shots' default is
    the chosen screen's PNG."""
    monitors = [Monitor(0, 0, 1600, 600), Monitor(*LEFT, primary=True), Monitor(*RIGHT)]
    assert monitor_at(monitors, (10, 10)) == 1 and monitor_at(monitors, (640, 599)) == 2
    assert monitor_at(monitors, (1600, 0)) is None
    assert Shots([Shot(b"a", "1"), Shot(b"b", "2")], chosen=1).default == b"b" and Shots([]).default == b""


async def test_the_window_sends_the_monitor_the_user_sees(tmp_path: Path) -> None:
    """Focused window on the right monitor → the window shows 'Screen 2' first and sends a 960×600 PNG; the user
    clicks the other monitor's button → the preview changes and the next request's screenshot is 640×600."""
    handle = start_xvfb(1600, 600)
    try:
        for args in (["--setmonitor", "left", "640/160x600/150+0+0", "screen"],
                     ["--setmonitor", "right", "960/240x600/150+640+0", "none"]):
            subprocess.run(["xrandr", *args], env=handle.env(), check=True, timeout=10)
        async with tk_app(handle.display, 300, 200) as app:
            await app.command("move 900 100")
            await app.command("focus")

            async def focused_right() -> bool:
                point = await asyncio.to_thread(focus_point, handle.display)
                return point is not None and RIGHT[0] <= point[0] < RIGHT[0] + RIGHT[2]

            await wait_until(focused_right, timeout=15, what="the X focus on the right monitor's window")
            async with desk(tmp_path) as (server, _agent, sock):
                with help_window(sock, handle.display) as proc:
                    events = _events(proc)
                    ready = await next_event(events, "ready", 60)
                    assert len(ready["screens"]) == 2 and ready["shown"] == 1, ready
                    await wait_window(handle.display, TITLE, timeout=30)
                    # the user clicks into the help window (what a window manager gives focus on; Xvfb has none)
                    await asyncio.to_thread(xdotool, handle.display, "search", "--name", TITLE, "windowfocus")
                    await send(handle.display, "right screen please")
                    await next_event(events, "sent")
                    first = await screenshot_of(server, 1)
                    assert png_size(first) == (RIGHT[2], RIGHT[3])

                    await click_colour(handle.display, SCREEN_BG, timeout=30)  # the other monitor's button
                    picked = await next_event(events, "screen")
                    assert picked["shown"] == 0 and picked["label"].startswith("Screen 1"), picked
                    await send(handle.display, "left screen now")
                    await next_event(events, "sent")
                    second = await screenshot_of(server, 2)
                    assert png_size(second) == (LEFT[2], LEFT[3])
    finally:
        handle.stop()


async def send(display: str, summary: str) -> None:
    await click_colour(display, SUMMARY_BG, timeout=30)
    await asyncio.to_thread(xdotool, display, "type", "--delay", "20", summary)
    await click_colour(display, SEND_BG)


async def screenshot_of(server: Any, number: int) -> bytes:
    found: list[dict[str, Any]] = []

    async def arrived() -> bool:
        found[:] = [r for r in await requests_of(server) if r["number"] == number]
        return bool(found)

    await wait_until(arrived, timeout=15, what=f"request #{number} in the queue")
    status, shot = await _raw(server, f"/api/v1/requests/{found[0]['id']}/screenshot")
    assert status == 200
    return bytes(shot)
