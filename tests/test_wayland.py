"""Screen sessions on Wayland: a real headless Mutter, its RemoteDesktop/ScreenCast API, PipeWire.

Each test starts its own compositor stack (tests/wayland.py), runs the agent's screen session
in this process with the session's environment (as the per-user session helper would), and
drives it through a websocket with the reference viewer. What the viewer shows is compared
with an independent capture (a second ScreenCast session read by its own ``gst-launch``);
input must reach a native Wayland client (foot) and an XWayland one (Tk); the consent
prompt must be visible on the Wayland screen and answerable with xdotool on XWayland.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.consent.tk import TkConsentUI
from agent.consent.tk_app import ALLOW_BG, PROMPT_TITLE
from agent.consent.ui import PromptRequest
from agent.screen.capture import Frame
from agent.screen.wayland.backend import choose_backend
from agent.screen.wayland.frames import PipeWireCapture
from agent.screen.wayland.mutter import MutterSession
from agent.viewer import Viewer
from tests.test_screen_support import poll_until, serve_session, tk_app
from tests.wayland import MutterHandle, adopted_mutter, foot_command

TIMEOUT = 30.0
#: foot's background in the key test: a colour nothing else on the desktop has.
FOOT_BG = "#2a1b3c"


@pytest.fixture
def wayland(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MutterHandle]:
    """A headless Mutter whose session environment this process (the agent under test) adopts."""
    with adopted_mutter(tmp_path, monkeypatch, 1920, 1080) as handle:
        yield handle


@contextlib.asynccontextmanager
async def reference() -> AsyncIterator[PipeWireCapture]:
    """An independent cast of the same monitor: its own Mutter session and gst-launch child."""
    session = await MutterSession.open()
    s = session.stream
    capture = PipeWireCapture(s.node_id, s.x, s.y, s.w, s.h)
    capture.start(lambda: None)
    try:
        yield capture
    finally:
        await asyncio.to_thread(capture.close)
        await session.close()


async def grab(capture: PipeWireCapture) -> Frame:
    return await asyncio.to_thread(capture.grab, 1)


async def settle_equal(viewer: Viewer, ref: PipeWireCapture, timeout: float = TIMEOUT) -> None:
    """Wait until the viewer's image equals the reference cast exactly (after the lossless refinement)."""
    deadline = time.monotonic() + timeout
    last = -1.0
    while time.monotonic() < deadline:
        expected = (await grab(ref))[:, :, :3]
        if viewer.framebuffer.shape == expected.shape:
            diff = np.abs(viewer.framebuffer.astype(np.int16) - expected.astype(np.int16))
            if not diff.any():
                return
            last = float(diff.mean())
        await asyncio.sleep(0.1)  # polling interval, not synchronization
    raise AssertionError(f"viewer never equalled the screen (last mean error {last})")


def colour_box(frame: Frame, colour: str) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the pixels of exactly ``colour`` (#rrggbb) in a BGRx frame."""
    r, g, b = (int(colour[i: i + 2], 16) for i in (1, 3, 5))
    ys, xs = np.nonzero((frame[:, :, 2] == r) & (frame[:, :, 1] == g) & (frame[:, :, 0] == b))
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def test_backend_is_chosen_from_the_users_session() -> None:
    """XDG_SESSION_TYPE decides, then WAYLAND_DISPLAY; HELPLINE_SCREEN_BACKEND overrides both."""
    assert choose_backend({"XDG_SESSION_TYPE": "wayland"}) == "wayland"
    assert choose_backend({"XDG_SESSION_TYPE": "x11", "WAYLAND_DISPLAY": "wayland-0"}) == "x11"
    assert choose_backend({"WAYLAND_DISPLAY": "wayland-0"}) == "wayland"
    assert choose_backend({"DISPLAY": ":0"}) == "x11"
    assert choose_backend({"XDG_SESSION_TYPE": "wayland", "HELPLINE_SCREEN_BACKEND": "x11"}) == "x11"
    # An explicit X server other than the session's own (a test's Xvfb on a Wayland desktop) is X11.
    assert choose_backend({"XDG_SESSION_TYPE": "wayland", "DISPLAY": ":0"}, display=":57") == "x11"
    assert choose_backend({"XDG_SESSION_TYPE": "wayland", "DISPLAY": ":0"}, display=":0") == "wayland"


async def test_viewer_equals_the_wayland_screen_after_a_change(wayland: MutterHandle) -> None:
    """The viewer shows the cast exactly; a change on an XWayland window arrives; live and final stats name the backend."""
    async with tk_app(wayland.display) as app, reference() as ref, serve_session("view", "") as served:
        async with Viewer(served.url) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 1 and v.agent_stats is not None, timeout=TIMEOUT)
            assert viewer.framebuffer.shape == (1080, 1920, 3)
            # The stats the console's status line shows name the backend while the session runs.
            assert viewer.agent_stats is not None and viewer.agent_stats.backend == "wayland-mutter"
            await settle_equal(viewer, ref)
            await app.command("fill #12ab34")
            await poll_until(lambda: colour_box(viewer.framebuffer, "#12ab34") is not None, TIMEOUT)
            box = colour_box(viewer.framebuffer, "#12ab34")
            assert box is not None and box[2:] == (64, 64), box
            await settle_equal(viewer, ref)
    stats = await served.stats
    assert stats.backend == "wayland-mutter" and stats.capture == "damage"
    assert stats.updates_sent >= 2


async def test_keys_reach_a_native_wayland_window(wayland: MutterHandle, tmp_path: Path) -> None:
    """Text and keys typed in the viewer reach foot (a native Wayland terminal) through the RemoteDesktop session."""
    out = tmp_path / "typed.txt"
    foot = subprocess.Popen(foot_command(FOOT_BG),
                            env={**wayland.env(), "PS1": "$ "}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with serve_session("control", "") as served:
            async with Viewer(served.url) as viewer:
                # foot's window on the cast (found by its background colour); a click gives it the keyboard.
                await poll_until(lambda: colour_box(viewer.framebuffer, FOOT_BG) is not None, TIMEOUT, interval=0.1)
                box = colour_box(viewer.framebuffer, FOOT_BG)
                assert box is not None
                x, y, w, h = box
                await viewer.click(x + w // 2, y + h // 2)
                await viewer.send_text(f"echo wayland-keys > {out}")
                await viewer.press_key("Enter")
                await poll_until(lambda: out.exists() and out.read_text() == "wayland-keys\n", TIMEOUT)
        stats = await served.stats
        assert stats.injected_inputs >= 5 and stats.refused_inputs == 0
    finally:
        foot.terminate()
        foot.wait(timeout=10)


def pointer_shape(frame: Frame, x: int, y: int) -> str | None:
    """The pointer drawn into ``frame`` at (x, y): "arrow", "ibeam" or None (none there).

    The cast embeds the pointer (no cursor metadata reaches the agent through gst-launch), so its
    shape is read from the pixels: everything within 20 px that differs from the patch's corner
    (the background). An arrow's hotspot is its tip, so it lies right of and below (x, y); a text
    I-beam is centred on its hotspot, so it reaches well above and below it.
    """
    patch = frame[y - 20: y + 20, x - 20: x + 20, :3].astype(np.int16)
    ys, xs = np.nonzero(np.abs(patch - patch[0, 0]).sum(axis=2) > 40)
    if len(xs) < 20:
        return None
    top, bottom, left = int(ys.min()) - 20, int(ys.max()) - 20, int(xs.min()) - 20
    if top <= -5 and bottom >= 5:
        return "ibeam"
    if top >= -3 and left >= -3 and bottom >= 8:
        return "arrow"
    return None


def full_window(box: tuple[int, int, int, int] | None) -> bool:
    """``box`` is a whole foot window (its default size is 700×491 here), not a sliver of it."""
    return box is not None and box[2] >= 300 and box[3] >= 200


async def test_the_pointers_shape_is_in_the_viewers_frames(wayland: MutterHandle) -> None:
    """Under Wayland the pointer is drawn into the cast (cursor-mode embedded): the viewer sees an arrow over
    the desktop and the text I-beam over foot's terminal, at the place the viewer moved it to."""
    foot = subprocess.Popen(foot_command(FOOT_BG),
                            env=wayland.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with serve_session("control", "") as served, Viewer(served.url) as viewer:
            # foot's whole window: the first exact pixels of its background can be a sliver (seen: 1×8 px at its
            # right edge, the rest not yet exact in the viewer), and a "centre" on that edge reads as an I-beam with
            # no pointer there — the pointer was then never moved, which looked like a stale arrow (1 run in 3).
            await poll_until(lambda: full_window(colour_box(viewer.framebuffer, FOOT_BG)), TIMEOUT, interval=0.1)
            box = colour_box(viewer.framebuffer, FOOT_BG)
            assert box is not None
            x, y, w, h = box
            desk = (x + w + 200, y + h + 200)  # the bare desktop, right of and below foot
            assert desk[0] < 1900 and desk[1] < 1060, box
            centre = (x + w // 2, y + h // 2)
            assert pointer_shape(viewer.framebuffer, *centre) is None  # foot's flat background before the move
            for (px, py), shape in ((desk, "arrow"), (centre, "ibeam")):
                async with asyncio.timeout(TIMEOUT):  # a fresh session may drop its first events: move again
                    while pointer_shape(viewer.framebuffer, px, py) != shape:
                        await viewer.send_mouse(px, py)
                        with contextlib.suppress(TimeoutError):
                            await poll_until(lambda: pointer_shape(viewer.framebuffer, px, py) == shape, 2.0)
            # The arrow left its old place: one pointer, and every region it crossed refreshed.
            await poll_until(lambda: pointer_shape(viewer.framebuffer, *desk) is None, TIMEOUT)
    finally:
        foot.terminate()
        foot.wait(timeout=10)


async def test_clicks_reach_an_xwayland_window(wayland: MutterHandle) -> None:
    """A click at the button's place on the cast presses the Tk button (pointer motion in stream space)."""
    async with tk_app(wayland.display) as app, serve_session("control", "") as served:
        async with Viewer(served.url) as viewer:
            await app.command("fill #ab12cd")
            await poll_until(lambda: colour_box(viewer.framebuffer, "#ab12cd") is not None, TIMEOUT)
            box = colour_box(viewer.framebuffer, "#ab12cd")
            assert box is not None
            # The Tk script puts the probe at canvas (640, 0) and "Press me" at (300, 300).
            x0, y0 = box[0] - 640, box[1]
            # Mutter may drop the first input events of a fresh RemoteDesktop session (as it drops first keys,
            # see injector.py): click again until the button says it was pressed, within the deadline.
            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while True:
                await viewer.click(x0 + 330, y0 + 312)
                try:
                    await app.expect(lambda line: line == "clicked", 3.0)
                    break
                except TimeoutError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
    stats = await served.stats
    assert stats.injected_inputs >= 3 and stats.injected_inputs % 3 == 0 and stats.backend == "wayland-mutter"


async def test_consent_prompt_is_on_the_wayland_screen_and_answered_with_xdotool(wayland: MutterHandle) -> None:
    """The Tk prompt runs on XWayland, shows on the cast (its Allow colour), and a real click answers it."""
    ui = TkConsentUI(display=wayland.display)
    request = PromptRequest(technician="Ann", mode="view", reason="printer", timeout_s=60)
    async with reference() as ref:
        answer = asyncio.create_task(ui.prompt(request))
        await poll_until(lambda: ref.frames > 0 and colour_box(ref.grab(1), ALLOW_BG) is not None, TIMEOUT,
                         interval=0.1)
        box = colour_box(await grab(ref), ALLOW_BG)
        assert box is not None and box[2] >= 40 and box[3] >= 20, box
        env = wayland.env()
        subprocess.run(["xdotool", "search", "--sync", "--name", PROMPT_TITLE, "windowactivate", "--sync"],
                       env=env, check=False, timeout=TIMEOUT, capture_output=True)
        cx, cy = box[0] + box[2] // 2, box[1] + box[3] // 2
        subprocess.run(["xdotool", "mousemove", "--sync", str(cx), str(cy), "click", "1"], env=env, check=True,
                       timeout=TIMEOUT, capture_output=True)
        result = await asyncio.wait_for(answer, TIMEOUT)
    assert result.allowed and result.by == "user"


async def test_stop_ends_the_cast_within_a_second(wayland: MutterHandle) -> None:
    """End session (the stop event) closes the tunnel, the Mutter session and the reader child within 1 s."""
    stop = asyncio.Event()
    async with serve_session("control", "", stop=stop) as served:
        async with Viewer(served.url) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=TIMEOUT)
            children = _reader_children()
            assert children, "no helpline-pwcast or gst-launch-1.0 child while streaming"
            started = time.monotonic()
            stop.set()
            stats = await asyncio.wait_for(served.stats, TIMEOUT)
            elapsed = time.monotonic() - started
    assert stats.end_reason == "stopped" and stats.backend == "wayland-mutter"
    assert elapsed < 1.0, f"session took {elapsed:.2f}s to end"
    assert not any(os.path.exists(f"/proc/{pid}") for pid in children), "the reader child outlived the session"


def _reader_children() -> list[int]:
    """PIDs of this process's frame readers: helpline-pwcast (native) or gst-launch-1.0."""
    out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(os.getpid())], capture_output=True, text=True,
                         check=False).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "gst-launch" in line or "helpline-pwcast" in line]


async def test_a_wayland_session_without_mutter_tells_the_viewer(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """No remote-desktop API on the bus: no X11 fallback, the viewer gets backend_unavailable and the reason."""
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    async with serve_session("view", "", backend="wayland") as served:
        async with Viewer(served.url) as viewer:
            with contextlib.suppress(ConnectionError):
                await viewer.wait_for(lambda v: bool(v.stats.errors), timeout=TIMEOUT)
            assert [e.code for e in viewer.stats.errors] == ["backend_unavailable"], viewer.stats.errors
            assert "session bus" in viewer.stats.errors[0].message
    stats = await served.stats
    assert stats.updates_sent == 0 and stats.end_reason.startswith("backend unavailable")
