"""Screen sessions through the xdg-desktop-portal (RemoteDesktop + ScreenCast), on a real headless GNOME.

The stack is tests/wayland.py's headless Mutter plus ``xdg-desktop-portal`` and its GNOME backend,
whose chooser ("Remote desktop": a monitor list, an "Allow remote interaction" switch,
Cancel/Share) is a native Wayland window on that compositor. The test plays the person: it
answers Helpline's own consent prompt first (xdotool on XWayland), and only then does the session
ask the portal; the chooser is found on an independent cast and clicked through Mutter's own
RemoteDesktop API (the same way it was first done by hand). Cancel must reach the technician.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from dbus_fast import Variant

from agent.consent.tk import TkConsentUI
from agent.consent.tk_app import ALLOW_BG, PROMPT_TITLE
from agent.consent.ui import PromptRequest
from agent.screen.capture import Frame
from agent.screen.wayland.backend import describe_backend, pick_wayland, wayland_preference
from agent.screen.wayland.frames import PipeWireCapture
from agent.screen.wayland.mutter import MutterSession
from agent.screen.wayland.portal import PortalError, _parse_start
from agent.screen.wayland.tokens import RestoreTokenStore, default_path
from agent.viewer import Viewer
from tests.test_screen_support import poll_until, serve_session
from tests.test_wayland import FOOT_BG, colour_box, settle_equal
from tests.wayland import MutterHandle, adopted_mutter, foot_command, start_mutter

TIMEOUT = 60.0
#: GNOME's suggested-action blue: the chooser's Share button (and the switch once turned on).
SHARE_BLUE = "#3584e4"
BTN_LEFT = 0x110


@pytest.fixture
def portal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MutterHandle]:
    """Headless Mutter + xdg-desktop-portal(-gnome); this process adopts the session and forces the portal path."""
    with adopted_mutter(tmp_path, monkeypatch, 1920, 1080, portal=True) as handle:
        yield handle


@contextlib.asynccontextmanager
async def onlooker() -> AsyncIterator[tuple[MutterSession, PipeWireCapture]]:
    """The test's own eyes and hands: a Mutter remote-desktop session and its cast (not the portal's)."""
    session = await MutterSession.open()
    s = session.stream
    capture = PipeWireCapture(s.node_id, s.x, s.y, s.w, s.h)
    capture.start(lambda: None)
    try:
        yield session, capture
    finally:
        await asyncio.to_thread(capture.close)
        await session.close()


def chooser(frame: Frame) -> dict[str, tuple[int, int]] | None:
    """Centres of the chooser's Share, Cancel and "Allow remote interaction" switch, or None while it is not shown.

    Share is the blue (#3584e4) button at the right of the header; Cancel the #d9d9d9 button in the
    same rows left of it; the switch's track (#e1e1e1 while off) lies in the dialog's lower part.
    """
    share = colour_box(frame, SHARE_BLUE)
    if share is None or share[2] < 40 or share[3] < 20:
        return None
    x, y, w, h = share
    rows = frame[y: y + h, : x]
    _ys, xs = np.nonzero((rows[:, :, 0] == 217) & (rows[:, :, 1] == 217) & (rows[:, :, 2] == 217))
    below = frame[y + h + 120: y + h + 300, x - 200: x + w]
    sy, sx = np.nonzero((below[:, :, 0] == 225) & (below[:, :, 1] == 225) & (below[:, :, 2] == 225))
    if not len(xs) or not len(sx):
        return None
    switch_x, switch_y = x - 200 + int(np.median(sx)), y + h + 120 + int(np.median(sy))
    # The switch sits in an AdwActionRow whose activatable widget it is: a click on the row's title toggles it.
    return {"share": (x + w // 2, y + h // 2), "cancel": (int(np.median(xs)), y + h // 2),
            "switch": (switch_x, switch_y), "interaction": (switch_x - 250, switch_y)}


async def wait_chooser(capture: PipeWireCapture) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] | None = None

    def shown() -> bool:
        nonlocal found
        found = chooser(capture.grab(1)) if capture.frames else None
        return found is not None

    try:
        await poll_until(shown, TIMEOUT, interval=0.2)
    except TimeoutError:
        if capture.frames:  # for the failure's diagnosis: what was on screen instead
            np.save(Path(os.environ["XDG_STATE_HOME"]).parent / "no-chooser.npy", capture.grab(1))
        raise
    assert found is not None
    return found


def switched_on(frame: Frame) -> bool:
    """The switch turned blue too: the blue pixels now reach far below the Share button."""
    box = colour_box(frame, SHARE_BLUE)
    return box is not None and box[3] > 100


async def click_until(session: MutterSession, at: tuple[int, int], done: Callable[[], bool]) -> None:
    """Click at ``at`` until ``done()``: a fresh RemoteDesktop session drops its first input events (see
    test_wayland's click test), and a GTK button wants the pointer to have entered it before the press."""
    async with asyncio.timeout(30):
        nudge = 0
        while True:
            await session.pointer_motion(at[0] + nudge, at[1])
            await asyncio.sleep(0.2)  # pacing between a person's move and press, not synchronization
            await session.pointer_button(BTN_LEFT, True)
            await asyncio.sleep(0.1)  # a press held as long as a finger does: GTK's switch ignores a 0 ms click
            await session.pointer_button(BTN_LEFT, False)
            with contextlib.suppress(TimeoutError):
                await poll_until(done, 3.0, interval=0.1)
                if await _stays(done, 1.5):  # a late earlier click can toggle a switch back: it must stay done
                    return
            nudge = (nudge + 1) % 3


async def _stays(check: Callable[[], bool], seconds: float) -> bool:
    """Whether ``check()`` holds at every poll for ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if not check():
            return False
        await asyncio.sleep(0.1)
    return True


async def answer_consent(wayland: MutterHandle, capture: PipeWireCapture) -> None:
    """Helpline's prompt on XWayland, clicked with xdotool; the portal's chooser is not on screen meanwhile."""
    ui = TkConsentUI(display=wayland.display)
    answer = asyncio.create_task(ui.prompt(PromptRequest(technician="Ann", mode="control", reason="printer",
                                                         timeout_s=120)))
    await poll_until(lambda: capture.frames > 0 and colour_box(capture.grab(1), ALLOW_BG) is not None, TIMEOUT,
                     interval=0.1)
    frame = await asyncio.to_thread(capture.grab, 1)
    assert chooser(frame) is None, "the portal asked before the person answered Helpline's prompt"
    box = colour_box(frame, ALLOW_BG)
    assert box is not None
    env = wayland.env()
    subprocess.run(["xdotool", "search", "--sync", "--name", PROMPT_TITLE, "windowactivate", "--sync"],
                   env=env, check=False, timeout=TIMEOUT, capture_output=True)
    subprocess.run(["xdotool", "mousemove", "--sync", str(box[0] + box[2] // 2), str(box[1] + box[3] // 2),
                    "click", "1"], env=env, check=True, timeout=TIMEOUT, capture_output=True)
    result = await asyncio.wait_for(answer, TIMEOUT)
    assert result.allowed and result.by == "user"


async def test_a_session_through_the_portal_after_consent(portal: MutterHandle, tmp_path: Path) -> None:
    """Our prompt, then GNOME's chooser (Share, interaction on): the viewer equals the screen and keys reach foot.

    A restore token left from an earlier session is presented; Debian 12's portal-gnome 43 returns no token
    (it keeps no RemoteDesktop permissions), so the spent one must be gone afterwards and nothing else stored.
    """
    store = RestoreTokenStore()
    assert store.path == tmp_path / "state" / "helpline" / "portal-restore-token.json"
    store.replace("0b4a7c3e-earlier-session")
    assert store.load() == "0b4a7c3e-earlier-session"
    out = tmp_path / "typed.txt"
    foot = subprocess.Popen(foot_command(FOOT_BG),
                            env={**portal.env(), "PS1": "$ "}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with onlooker() as (hands, eyes):
            await answer_consent(portal, eyes)
            async with serve_session("control", "") as served, Viewer(served.url) as viewer:
                buttons = await wait_chooser(eyes)
                # "Allow remote interaction" is off by default (no input devices granted): on, then Share.
                try:
                    await click_until(hands, buttons["interaction"], lambda: switched_on(eyes.grab(1)))
                except TimeoutError:
                    np.save(tmp_path / "switch.npy", eyes.grab(1))
                    raise
                await click_until(hands, buttons["share"], lambda: chooser(eyes.grab(1)) is None)
                await viewer.wait_for(lambda v: v.stats.updates >= 1 and v.agent_stats is not None,
                                      timeout=TIMEOUT)
                assert viewer.agent_stats is not None and viewer.agent_stats.backend == "wayland-portal"
                assert not viewer.stats.errors, viewer.stats.errors  # no input_not_granted: the switch was on
                await settle_equal(viewer, eyes, TIMEOUT)
                box = colour_box(viewer.framebuffer, FOOT_BG)
                assert box is not None, "foot is not on the portal's cast"
                x, y, w, h = box
                for _attempt in range(2):  # the click that focuses foot may land before its shell reads
                    await viewer.click(x + w // 2, y + h // 2)
                    await viewer.send_text(f"echo portal-keys > {out}")
                    await viewer.press_key("Enter")
                    with contextlib.suppress(TimeoutError):
                        await poll_until(lambda: out.exists() and out.read_text() == "portal-keys\n", 15.0)
                        break
        stats = await served.stats
        assert stats.backend == "wayland-portal" and stats.refused_inputs == 0 and not stats.view_only_reason
        got = out.read_text() if out.exists() else "(no file)"
        assert got == "portal-keys\n", f"keys did not reach foot through the portal: {got!r}"
        # The flake this once was: a key's release overtaking its press inside xdg-desktop-portal (README, Wayland).
        log = (tmp_path / "mutter.log").read_text(errors="replace")
        assert "Received multiple virtual" not in log, "a key's press and release reached Mutter out of order"
    finally:
        foot.terminate()
        foot.wait(timeout=10)
    assert store.load() is None and not store.path.exists(), "the spent restore token was kept"


async def test_remote_interaction_left_off_tells_the_technician(portal: MutterHandle) -> None:
    """Share with "Allow remote interaction" off: the portal grants no devices, so the technician is told
    (input_not_granted) before the first frame, the screen is still shared, and each input is refused with
    that reason — not sent to be lost — and counted; the session's end reason names it."""
    async with onlooker() as (hands, eyes), serve_session("control", "") as served:
        async with Viewer(served.url) as viewer:
            buttons = await wait_chooser(eyes)
            assert not switched_on(eyes.grab(1)), "the chooser's switch was on by default"
            await click_until(hands, buttons["share"], lambda: chooser(eyes.grab(1)) is None)
            await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=TIMEOUT)
            assert [e.code for e in viewer.stats.errors] == ["input_not_granted"], viewer.stats.errors
            notice = viewer.stats.errors[0].message
            assert "did not grant remote keyboard and pointer input" in notice and "view-only" in notice
            await viewer.press_key("Enter")
            await viewer.wait_for(lambda v: len(v.stats.errors) >= 2, timeout=TIMEOUT)
            refusal = viewer.stats.errors[1]
            assert refusal.code == "view_only" and refusal.message == notice
        stats = await asyncio.wait_for(served.stats, TIMEOUT)
    assert stats.backend == "wayland-portal" and stats.updates_sent >= 1
    assert stats.refused_inputs >= 1 and stats.injected_inputs == 0
    assert stats.view_only_reason == notice and "input_not_granted" in stats.end_reason


async def test_cancel_in_the_portals_chooser_tells_the_technician(portal: MutterHandle) -> None:
    """Cancel in GNOME's chooser: the viewer gets portal_cancelled with the reason, the session ends, no frame."""
    async with onlooker() as (hands, eyes), serve_session("view", "") as served:
        async with Viewer(served.url) as viewer:
            buttons = await wait_chooser(eyes)
            await click_until(hands, buttons["cancel"], lambda: bool(viewer.stats.errors) or viewer.closed.is_set())
            with contextlib.suppress(ConnectionError):
                await viewer.wait_for(lambda v: bool(v.stats.errors), timeout=TIMEOUT)
            assert [e.code for e in viewer.stats.errors] == ["portal_cancelled"], viewer.stats.errors
            assert "cancelled the desktop's screen-sharing dialog" in viewer.stats.errors[0].message
        stats = await asyncio.wait_for(served.stats, TIMEOUT)
    assert stats.updates_sent == 0 and stats.backend == "wayland-portal"
    assert stats.end_reason.startswith("portal cancelled")


async def test_auto_picks_mutter_on_gnome_and_the_portal_elsewhere(tmp_path: Path) -> None:
    """auto: Mutter's API when it is on the session bus, else the portal; the capabilities name the same."""
    handle = start_mutter(1920, 1080, log_dir=tmp_path)
    try:
        env = handle.env()
        assert await pick_wayland(handle.bus_address, "auto") == "mutter"
        assert await pick_wayland(handle.bus_address, "portal") == "portal"
        assert await describe_backend(None, {**env, "HELPLINE_AGENT_CONFIG": str(tmp_path / "none")}) \
            == "wayland-mutter"
        assert await describe_backend(None, {**env, "HELPLINE_WAYLAND_BACKEND": "portal"}) == "wayland-portal"
        assert await describe_backend(None, {"XDG_SESSION_TYPE": "x11"}) == "x11"
    finally:
        handle.stop()
    # No Mutter (a KDE or wlroots session bus, here: none at all) → the portal.
    assert await pick_wayland(f"unix:path={tmp_path}/no-bus", "auto") == "portal"


def test_wayland_backend_is_configurable(tmp_path: Path) -> None:
    """[screen] wayland_backend in the agent's config file; HELPLINE_WAYLAND_BACKEND overrides; junk → auto."""
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\nlog_level = "info"\n\n[screen]\nwayland_backend = "portal"\n')
    assert wayland_preference({"HELPLINE_AGENT_CONFIG": str(config)}) == "portal"
    assert wayland_preference({"HELPLINE_AGENT_CONFIG": str(config), "HELPLINE_WAYLAND_BACKEND": "mutter"}) == "mutter"
    assert wayland_preference({"HELPLINE_AGENT_CONFIG": str(tmp_path / "missing.toml")}) == "auto"
    config.write_text('[screen]\nwayland_backend = "vnc"\n')
    assert wayland_preference({"HELPLINE_AGENT_CONFIG": str(config)}) == "auto"


def test_restore_token_store(tmp_path: Path) -> None:
    """Per user (XDG_STATE_HOME or ~/.local/state), 0600 in 0700, replaced by each Start's answer, junk ignored."""
    assert default_path({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == Path("/s/helpline/portal-restore-token.json")
    assert default_path({"HOME": "/h"}) == Path("/h/.local/state/helpline/portal-restore-token.json")
    store = RestoreTokenStore(tmp_path / "state" / "helpline" / "portal-restore-token.json")
    assert store.load() is None
    store.replace("first")
    assert store.load() == "first"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    store.replace("second")  # tokens are single use: the portal's successor replaces the spent one
    assert store.load() == "second"
    store.replace(None)  # the portal returned none (refused, or keeps no permissions): drop
    assert not store.path.exists()
    store.replace("x" * 10_000)  # not a plausible token: not kept
    assert store.load() is None
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_text("{not json")
    assert store.load() is None
    store.path.write_bytes(b" " * 100_000)
    assert store.load() is None


def test_a_malformed_start_answer_is_a_portal_error() -> None:
    """What the portal answers is checked: no stream, no size, junk → PortalError; a token too long is not kept."""
    good = {"streams": Variant("a(ua{sv})", [[42, {"size": Variant("(ii)", [1920, 1080])}]]),
            "devices": Variant("u", 3), "restore_token": Variant("s", "tok")}
    started = _parse_start(good)
    assert (started.stream.node_id, started.stream.w, started.devices, started.restore_token) == (42, 1920, 3, "tok")
    assert _parse_start({**good, "restore_token": Variant("s", "x" * 5000)}).restore_token is None
    for bad in ({}, {"streams": Variant("a(ua{sv})", [])}, {"streams": Variant("a(ua{sv})", [[42, {}]])},
                {"streams": Variant("a(ua{sv})", [[42, {"size": Variant("s", "big")}]])}):
        with pytest.raises(PortalError):
            _parse_start(bad)
