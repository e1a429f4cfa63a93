"""The portal's view-only path: a desktop whose xdg-desktop-portal offers ScreenCast but no RemoteDesktop.

That is every wlroots desktop (sway, Wayfire, Hyprland…): xdg-desktop-portal-wlr implements ScreenCast only.
Two real stacks:

* **sway** (tests/sway.py: headless sway 1.7 + xdg-desktop-portal-wlr 0.7.1): the agent reads the portal's
  offer (no RemoteDesktop, monitors) and reports ``wayland-portal``; a session goes the ScreenCast-only way
  (``CreateSession``/``SelectSources`` on ScreenCast, accepted) — but ``Start`` cannot deliver frames on this
  machine: without a DRM device wlroots renders with pixman, whose screencopy offers no DMA-BUF format, and
  xdpw 0.7.1 then refuses every cast ("unable to receive a valid format from wlr_screencopy", upstream
  xdg-desktop-portal-wlr issue 289). The test pins that cause (so it fails — and should be extended to frames —
  the day the stack can cast) and that the technician is told why.
* **GNOME with RemoteDesktop taken out of the portal** (``XDG_DESKTOP_PORTAL_DIR`` with a gnome.portal listing
  ScreenCast only): the same ScreenCast-only portal as wlroots offers, one that casts here. It carries the
  frame, view-only and restore-token checks; its "Screen Share" chooser is clicked through Mutter's own API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from dbus_fast import BusType
from dbus_fast.aio import MessageBus

from agent.consent.tk import TkConsentUI
from agent.consent.tk_app import ALLOW_BG, PROMPT_TITLE
from agent.consent.ui import PromptRequest
from agent.screen.capture import Frame
from agent.screen.wayland.backend import describe_backend, screen_capabilities
from agent.screen.wayland.frames import PipeWireCapture
from agent.screen.wayland.portal import NO_REMOTE_INPUT, portal_offer
from agent.screen.wayland.tokens import RestoreTokenStore
from agent.viewer import Viewer
from protocol.screen_backend import VIEW_ONLY, capability
from tests.sway import BACKGROUND, adopted_sway, screenshot, spawn_client
from tests.test_screen_support import poll_until, serve_session
from tests.test_wayland import FOOT_BG, colour_box, settle_equal
from tests.test_wayland_portal import SHARE_BLUE, click_until, onlooker
from tests.wayland import MutterHandle, foot_command, start_mutter, start_portal

TIMEOUT = 60.0
#: The chooser's Cancel button, and its Share button while no monitor is chosen (insensitive).
CANCEL_GREY = (217, 217, 217)
SHARE_PALE = (144, 183, 231)


@pytest.fixture
def screencast_portal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MutterHandle]:
    """Headless Mutter + xdg-desktop-portal(-gnome) told that ScreenCast is all there is; this process adopts it."""
    handle = start_mutter(1920, 1080, log_dir=tmp_path)
    try:
        for key, value in start_portal(handle, log_dir=tmp_path, screencast_only=True).items():
            if os.environ.get(key) != value:
                monkeypatch.setenv(key, value)
        monkeypatch.setenv("HELPLINE_WAYLAND_BACKEND", "portal")
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def sway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MutterHandle]:
    """Headless sway + xdg-desktop-portal-wlr (tests/sway.py); this process adopts its session."""
    with adopted_sway(tmp_path, monkeypatch) as handle:
        yield handle


def _box(frame: Frame, rgb: tuple[int, int, int]) -> tuple[int, int, int, int] | None:
    return colour_box(frame, "#{:02x}{:02x}{:02x}".format(*rgb))


def screen_share(frame: Frame) -> dict[str, tuple[int, int]] | None:
    """Centres of the "Screen Share" chooser's Cancel, Share and monitor row, or None while it is not shown.

    Cancel is the grey button at the top left of the dialog (the topmost, leftmost #d9d9d9 pixels: a hovered
    row is that grey too), Share the button right of it in the same rows (pale until a monitor is chosen,
    then GNOME blue); the monitor list is the white box below (rows at least 300 px wide; "row" is None once
    the row is chosen and no longer white)."""
    ys, xs = np.nonzero(colour_mask(frame, "#{:02x}{:02x}{:02x}".format(*CANCEL_GREY)))
    if len(ys) < 200:
        return None
    near = ys < ys.min() + 40
    near &= xs < xs[near].min() + 150
    cx, cy = int(xs[near].min()), int(ys[near].min())
    cw, ch = int(xs[near].max()) - cx + 1, int(ys[near].max()) - cy + 1
    if cw < 30 or ch < 15:
        return None
    header = frame[cy: cy + ch, cx + cw: cx + cw + 600]
    share_mask = ((header[:, :, 2] == SHARE_PALE[0]) & (header[:, :, 1] == SHARE_PALE[1])
                  & (header[:, :, 0] == SHARE_PALE[2])) | colour_mask(header, SHARE_BLUE)
    _sy, sx = np.nonzero(share_mask)
    if not len(sx):
        return None
    found = {"cancel": (cx + cw // 2, cy + ch // 2), "share": (cx + cw + int(np.median(sx)), cy + ch // 2)}
    white = colour_mask(frame[cy + ch: cy + ch + 300, cx: cx + 600], "#ffffff")
    rows = np.nonzero(white.sum(axis=1) >= 300)[0]
    if len(rows):
        found["row"] = (cx + 40, cy + ch + int(rows.min() + rows.max()) // 2)
    return found


def colour_mask(frame: Frame, colour: str) -> np.ndarray[tuple[int, ...], np.dtype[np.bool_]]:
    r, g, b = (int(colour[i: i + 2], 16) for i in (1, 3, 5))
    mask: np.ndarray[tuple[int, ...], np.dtype[np.bool_]] = (frame[:, :, 2] == r) & (frame[:, :, 1] == g) & (
        frame[:, :, 0] == b)
    return mask


def share_ready(frame: Frame) -> bool:
    """A monitor is chosen: Share turned GNOME blue."""
    found = screen_share(frame)
    if found is None:
        return False
    x, y = found["share"]
    return bool(colour_mask(frame[y - 2: y + 3, x - 10: x + 11], SHARE_BLUE).any())


async def wait_screen_share(eyes: PipeWireCapture) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] | None = None

    def shown() -> bool:
        nonlocal found
        found = screen_share(eyes.grab(1)) if eyes.frames else None
        return found is not None

    await poll_until(lambda: shown() and "row" in (found or {}), TIMEOUT, interval=0.2)
    assert found is not None
    return found


async def consent(wayland: MutterHandle, eyes: PipeWireCapture, gate: Callable[[], None]) -> None:
    """Helpline's own prompt (Tk on XWayland) answered with xdotool; ``gate()`` runs while it is on screen."""
    ui = TkConsentUI(display=wayland.display)
    answer = asyncio.create_task(ui.prompt(PromptRequest(technician="Ann", mode="control", reason="printer",
                                                         timeout_s=120)))
    await poll_until(lambda: eyes.frames > 0 and colour_box(eyes.grab(1), ALLOW_BG) is not None, TIMEOUT,
                     interval=0.1)
    gate()
    box = colour_box(await asyncio.to_thread(eyes.grab, 1), ALLOW_BG)
    assert box is not None
    env = wayland.env()
    subprocess.run(["xdotool", "search", "--sync", "--name", PROMPT_TITLE, "windowactivate", "--sync"],
                   env=env, check=False, timeout=TIMEOUT, capture_output=True)
    subprocess.run(["xdotool", "mousemove", "--sync", str(box[0] + box[2] // 2), str(box[1] + box[3] // 2),
                    "click", "1"], env=env, check=True, timeout=TIMEOUT, capture_output=True)
    result = await asyncio.wait_for(answer, TIMEOUT)
    assert result.allowed and result.by == "user"


async def _offer(bus_address: str) -> tuple[int, int]:
    bus = await MessageBus(bus_address=bus_address, bus_type=BusType.SESSION).connect()
    try:
        offer = await portal_offer(bus)
    finally:
        bus.disconnect()
    return offer.remote_desktop, offer.source_types


async def test_a_screencast_only_portal_gives_a_view_only_session(screencast_portal: MutterHandle,
                                                                 tmp_path: Path) -> None:
    """After Helpline's prompt, a control session on a ScreenCast-only portal: the technician is told before the
    first frame that this desktop's portal offers no remote input, the viewer equals the screen after a native
    window (foot) changed it, each input is refused with that reason, and the restore token the portal returns
    lets the next session start without its chooser."""
    remote_desktop, sources = await _offer(screencast_portal.bus_address)
    assert remote_desktop == 0 and sources & 1  # no RemoteDesktop; monitors (and windows, on GNOME)
    assert await describe_backend(None, screencast_portal.env() | {"HELPLINE_WAYLAND_BACKEND": "portal"}) \
        == "wayland-portal"
    assert VIEW_ONLY in await screen_capabilities(capability("wayland-portal"))
    assert await screen_capabilities(capability("x11")) == ["screen.backend:x11"]  # only ever beside the portal
    store = RestoreTokenStore()
    assert store.path == tmp_path / "state" / "helpline" / "portal-restore-token.json" and store.load() is None
    foot = subprocess.Popen(foot_command(FOOT_BG),
                            env=screencast_portal.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with onlooker() as (hands, eyes):
            def nothing_asked_yet() -> None:  # the prompt is up: the portal's chooser is not
                assert screen_share(eyes.grab(1)) is None, "the portal asked before Helpline's prompt was answered"

            await consent(screencast_portal, eyes, nothing_asked_yet)
            async with serve_session("control", "") as served, Viewer(served.url) as viewer:
                buttons = await wait_screen_share(eyes)
                await click_until(hands, buttons["row"], lambda: share_ready(eyes.grab(1)))
                await click_until(hands, buttons["share"], lambda: screen_share(eyes.grab(1)) is None)
                await viewer.wait_for(lambda v: v.stats.updates >= 1 and v.agent_stats is not None, timeout=TIMEOUT)
                assert viewer.agent_stats is not None and viewer.agent_stats.backend == "wayland-portal"
                assert [e.code for e in viewer.stats.errors] == ["input_not_granted"], viewer.stats.errors
                notice = viewer.stats.errors[0].message
                assert notice.startswith(NO_REMOTE_INPUT) and "view-only" in notice
                await poll_until(lambda: colour_box(viewer.framebuffer, FOOT_BG) is not None, TIMEOUT, interval=0.1)
                await settle_equal(viewer, eyes, TIMEOUT)
                await viewer.press_key("Enter")
                await viewer.wait_for(lambda v: len(v.stats.errors) >= 2, timeout=TIMEOUT)
                assert viewer.stats.errors[1].code == "view_only" and viewer.stats.errors[1].message == notice
            stats = await asyncio.wait_for(served.stats, TIMEOUT)
            assert stats.backend == "wayland-portal" and stats.updates_sent >= 1
            assert stats.refused_inputs >= 1 and stats.injected_inputs == 0 and stats.view_only_reason == notice
            # "Remember this selection" was on: the portal returned a token, kept for the next session.
            token = store.load()
            assert token is not None
            async with serve_session("view", "") as served, Viewer(served.url) as viewer:
                await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=TIMEOUT)
                assert screen_share(eyes.grab(1)) is None, "the portal asked again despite the restore token"
                assert not viewer.stats.errors, viewer.stats.errors  # a view session: nothing to be told
                await settle_equal(viewer, eyes, TIMEOUT)
            await asyncio.wait_for(served.stats, TIMEOUT)
            # The token the restored session's Start returned is kept (xdg-desktop-portal 1.16 hands back the same).
            assert store.load() is not None, "the restored session's token was not kept"
    finally:
        foot.terminate()
        foot.wait(timeout=10)


async def consent_on_sway(desktop: MutterHandle, wlr_log: Path) -> None:
    """Helpline's prompt (Tk on sway's XWayland) is on the output — grim sees its Allow button — while no portal
    session exists yet (xdpw logged none), and an xdotool click on Allow answers it."""
    ui = TkConsentUI(display=desktop.display)
    answer = asyncio.create_task(ui.prompt(PromptRequest(technician="Ann", mode="control", reason="printer",
                                                         timeout_s=120)))
    box: tuple[int, int, int, int] | None = None

    def shown() -> bool:
        nonlocal box
        box = colour_box(screenshot(desktop), ALLOW_BG)
        return box is not None

    try:
        deadline = time.monotonic() + TIMEOUT
        while not await asyncio.to_thread(shown):
            assert time.monotonic() < deadline, "Helpline's prompt never appeared on sway's output"
            assert not answer.done(), answer
            await asyncio.sleep(0.2)  # polling interval, not synchronization
        assert box is not None
        assert "create session method invoked" not in wlr_log.read_text(errors="replace"), "the portal was asked"
        env = desktop.env()
        subprocess.run(["xdotool", "mousemove", "--sync", str(box[0] + box[2] // 2), str(box[1] + box[3] // 2),
                        "click", "1"], env=env, check=True, timeout=TIMEOUT, capture_output=True)
        result = await asyncio.wait_for(answer, TIMEOUT)
    finally:
        if not answer.done():
            answer.cancel()
            await asyncio.gather(answer, return_exceptions=True)
    assert result.allowed and result.by == "user"


async def test_wlroots_portal_is_screencast_only_and_the_technician_learns_why_it_cannot_cast(
        sway: MutterHandle, tmp_path: Path) -> None:
    """Real sway + xdg-desktop-portal-wlr: the offer is read (no RemoteDesktop, monitors), the capability says
    wayland-portal + view-only, Helpline's prompt shows on sway's XWayland and is answered first, a session takes the ScreenCast-only way, and xdpw's refusal reaches the viewer with the
    reason; the compositor itself shows a native client (foot) — grim sees it — so what fails is xdpw's cast."""
    assert await _offer(sway.bus_address) == (0, 1)
    assert await describe_backend(None, dict(os.environ)) == "wayland-portal"  # auto: no Mutter on the bus
    # The hello says so: the backend, and that sessions here are view-only.
    assert await screen_capabilities(capability("wayland-portal")) == ["screen.backend:wayland-portal", VIEW_ONLY]
    assert colour_box(await asyncio.to_thread(screenshot, sway), BACKGROUND) is not None
    await consent_on_sway(sway, tmp_path / "portal-wlr.log")
    foot_log = tmp_path / "foot.log"
    foot = spawn_client(sway, foot_command(FOOT_BG), foot_log)
    try:
        deadline = time.monotonic() + TIMEOUT
        while colour_box(await asyncio.to_thread(screenshot, sway), FOOT_BG) is None:  # sway tiles it: full screen
            assert time.monotonic() < deadline, (
                f"foot never appeared on sway's output (exit {foot.poll()}): {foot_log.read_text(errors='replace')}")
            await asyncio.sleep(0.2)  # polling interval, not synchronization
        async with serve_session("control", "") as served, Viewer(served.url) as viewer:
            with contextlib.suppress(ConnectionError):
                await viewer.wait_for(lambda v: bool(v.stats.errors), timeout=TIMEOUT)
            assert [e.code for e in viewer.stats.errors] == ["backend_unavailable"], viewer.stats.errors
            message = viewer.stats.errors[0].message
            assert "wayland-portal" in message and "ScreenCast.Start: the portal refused" in message, message
        stats = await asyncio.wait_for(served.stats, TIMEOUT)
        assert stats.updates_sent == 0 and stats.backend == "wayland-portal"
        wlr_log = (tmp_path / "portal-wlr.log").read_text(errors="replace")
        assert "option persist_mode:2" in wlr_log  # the ScreenCast-only SelectSources, with persistence
        assert "unable to receive a valid format from wlr_screencopy" in wlr_log, wlr_log[-2000:]
    finally:
        foot.terminate()
        foot.wait(timeout=10)


async def test_a_control_session_on_a_view_only_device_is_refused_at_request_time(
        screencast_portal: MutterHandle, tmp_path: Path) -> None:
    """A real server and an in-process agent on the ScreenCast-only portal: the hello says ``screen.view-only``,
    so ``POST …/sessions`` with mode control is refused 409 ``device_view_only`` before anything is offered
    (no prompt on the device, no session row), while a view session is offered as usual."""
    from agent.config import AgentConfig
    from protocol.screen_backend import VIEW_ONLY
    from tests.harness import enroll_agent, running_agent, running_server
    from tests.test_session_helpers import api, install_test_auth

    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, display=screencast_portal.display)
        async with running_agent(state, config) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 30)
            conn = server.connections.get(state.device_id)
            assert conn is not None and conn.hello is not None and VIEW_ONLY in conn.hello.capabilities
            status, body = await api(server, "POST", f"/api/v1/devices/{state.device_id}/sessions", "root",
                                     {"mode": "control", "reason": "fix the printer"})
            assert status == 409 and body["error"]["code"] == "device_view_only", body
            assert "no remote input" in body["error"]["message"]
            rows = await server.db.fetchall("SELECT id FROM sessions WHERE device_id = ?", (state.device_id,))
            assert rows == []  # nothing recorded, nothing offered
            status, body = await api(server, "POST", f"/api/v1/devices/{state.device_id}/sessions", "root",
                                     {"mode": "view", "reason": "look at the printer queue"})
            assert status == 201, body
