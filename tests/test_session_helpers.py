"""Shared helpers for session, relay and grant tests (plus checks of the helpers themselves).

A test authenticator maps the ``X-Test-User`` header to a fixed principal; the console
stream is opened with the reference :class:`~agent.viewer.Viewer` and a correct Origin.
The Tk consent windows are answered like a user would: find the coloured button on the
screen (mss) and click it (xdotool).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import mss
import numpy as np
from aiohttp import web

from agent.consent.tk import TkConsentUI
from agent.consent.ui import ConsentUI
from agent.runtime import Agent
from agent.viewer import Viewer
from certs import tls
from server import audit
from server.api.context import AUTHENTICATORS
from server.app import HelplineServer
from server.auth.rights import ANY_GROUP, ROLE_RIGHTS, Principal, Right
from tests.harness import console_url, wait_until
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

PRINCIPALS: dict[str, Principal] = {
    "ann": Principal("u1", "ann", "technician", {ANY_GROUP: ROLE_RIGHTS["technician"]}),
    "vic": Principal("u2", "vic", "viewer", {ANY_GROUP: Right.VIEW_INVENTORY | Right.REMOTE_VIEW}),
    "bob": Principal("u3", "bob", "technician", {"other": ROLE_RIGHTS["technician"]}),
    "root": Principal("u4", "root", "admin", {ANY_GROUP: ROLE_RIGHTS["admin"]}),
    "eve": Principal("u5", "eve", "admin", {ANY_GROUP: ROLE_RIGHTS["admin"]}),
}


def install_test_auth(server: HelplineServer) -> None:
    async def authenticate(request: web.Request) -> Principal | None:
        return PRINCIPALS.get(request.headers.get("X-Test-User", ""))

    server.console_app[AUTHENTICATORS].append(authenticate)


async def api(server: HelplineServer, method: str, path: str, user: str, body: Any = None) -> tuple[int, Any]:
    ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
    async with aiohttp.ClientSession() as http, http.request(
        method, console_url(server) + path, json=body, ssl=ctx, headers={"X-Test-User": user}
    ) as response:
        return response.status, await response.json(content_type=None)


async def start_session(server: HelplineServer, device_id: str, mode: str = "view", reason: str = "support",
                        user: str = "ann") -> str:
    """A session asked for through the API (as ``user``, a test principal): its id."""
    status, body = await api(server, "POST", f"/api/v1/devices/{device_id}/sessions", user,
                             {"mode": mode, "reason": reason})
    assert status == 201, body
    return str(body["session_id"])


def viewer_for(server: HelplineServer, session_id: str, user: str = "ann", origin: str | None = None) -> Viewer:
    url = f"wss://localhost:{server.console_port}/api/v1/sessions/{session_id}/stream"
    ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
    return Viewer(url, ssl_context=ctx, headers={"Origin": origin or console_url(server), "X-Test-User": user})


def configure_agent(display: str | None, ui: ConsentUI | None = None, *, users: tuple[str, ...] = ("tester",),
                    reconnect_grace_s: float | None = None, **screen: Any) -> Callable[[Agent], None]:
    """A running_agent setup hook: sessions on ``display`` with the given consent UI (None = real Tk).

    ``users`` stands in for the logged-in users (Xvfb has no utmp login); ``()`` = nobody.
    """

    def setup(agent: Agent) -> None:
        manager = agent.sessions
        manager.display = display
        manager.ui = ui if ui is not None else TkConsentUI(display)
        manager.logged_in = lambda: list(users)
        manager.screen_kwargs = dict(screen)
        if reconnect_grace_s is not None:
            manager.reconnect_grace_s = reconnect_grace_s

    return setup


def write_policy(path: Path, **values: Any) -> Path:
    lines = [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def audit_actions(server: HelplineServer, target: str | None = None) -> list[str]:
    rows = await audit.recent(server.db, limit=500, target=target)
    return [r["action"] for r in reversed(rows)]


async def wait_for_audit(server: HelplineServer, action: str, timeout: float = 10.0) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    async def present() -> bool:
        rows = await audit.recent(server.db, limit=50, action=action)
        found[:] = rows
        return bool(rows)

    await wait_until(present, timeout=timeout, what=f"audit record {action}")
    return found[0]


# --- acting like the device user ---------------------------------------------------------


def find_colour(display: str, colour: str) -> tuple[int, int] | None:
    """Centre of the on-screen pixels of exactly ``colour`` (#rrggbb), or None."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    with mss.MSS(display=display) as grabber:
        shot = grabber.grab(grabber.monitors[0])
    pixels = np.frombuffer(shot.raw, dtype=np.uint8).reshape(shot.height, shot.width, 4)
    mask = (pixels[:, :, 2] == r) & (pixels[:, :, 1] == g) & (pixels[:, :, 0] == b)
    ys, xs = np.nonzero(mask)
    if len(xs) < 50:
        return None
    return int((xs.min() + xs.max()) // 2), int((ys.min() + ys.max()) // 2)


def xdotool(display: str, *args: str) -> str:
    result = subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display}, capture_output=True,
                            timeout=10, check=True, text=True)
    return result.stdout


def paint_picture(display: str, x: int, y: int, bgrx: np.ndarray) -> None:
    """Draw a BGRX picture straight onto the root window at (x, y): a photographic change the pipeline sends
    as JPEG (the X server reports it as damage like any drawing)."""
    from Xlib import X

    from agent.screen.xdisplay import open_display

    dpy = open_display(display)
    try:
        screen = dpy.screen()
        gc = screen.root.create_gc()
        h, w = bgrx.shape[:2]
        rows = max(1, 128_000 // (w * 4))  # requests below the core protocol's 256 kB limit
        for top in range(0, h, rows):
            band = np.ascontiguousarray(bgrx[top : top + rows])
            screen.root.put_image(gc, x, y + top, w, band.shape[0], X.ZPixmap, screen.root_depth, 0, band.tobytes())
        dpy.sync()
    finally:
        dpy.close()


def paint_root(display: str, colour: str) -> None:
    """Paint the whole root window one colour: a screen change as large as it gets."""
    subprocess.run(["xsetroot", "-solid", colour], env={**os.environ, "DISPLAY": display}, capture_output=True,
                   timeout=10, check=True)


async def click_colour(display: str, colour: str, timeout: float = 10.0, *, settled: bool = False) -> float:
    """Wait until a button of ``colour`` is on screen, click it; return the click's monotonic time.

    ``settled``: for a row of same-coloured buttons aimed at by its middle, wait until two polls 0.1 s
    apart find the same middle (a window still drawing its row shows only its first buttons).
    """
    deadline = time.monotonic() + timeout
    previous: tuple[int, int] | None = None
    while True:
        spot = await asyncio.to_thread(find_colour, display, colour)
        if spot is not None and (not settled or spot == previous):
            break
        previous = spot
        if settled and spot is not None:
            await asyncio.sleep(0.1)
        if time.monotonic() > deadline:
            raise AssertionError(f"no {colour} button appeared on {display} within {timeout}s")
        await asyncio.sleep(0.05)
    clicked = time.monotonic()
    await asyncio.to_thread(xdotool, display, "mousemove", "--sync", str(spot[0]), str(spot[1]), "click", "1")
    return clicked


def pointer_at(display: str) -> tuple[int, int]:
    """The X pointer's position on ``display``."""
    out = xdotool(display, "getmouselocation")
    x, y = (int(part.split(":")[1]) for part in out.split()[:2])
    return x, y


async def click_canvas_until_pointer_moves(display: str, page: Any, fx: float, fy: float, *,
                                           timeout: float = 30.0) -> None:
    """Click the console's screen canvas at the fractions ``fx``, ``fy`` of its size until the device's pointer
    is there (the canvas is measured again for each click: a refusal's notice can move it on the page)."""
    size = await page.evaluate("[document.querySelector('#screen').width, document.querySelector('#screen').height]")
    target = (round(size[0] * fx), round(size[1] * fy))

    async def click() -> None:
        box = await page.locator("#screen").bounding_box()
        assert box is not None
        await page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)

    await click_until_pointer_moves(display, click, target, timeout=timeout)


async def click_until_pointer_moves(display: str, click: Callable[[], Any], target: tuple[int, int], *,
                                    timeout: float = 30.0) -> None:
    """Click in the console (``click``) until the device's pointer is at ``target``.

    A click in the moment after the page shows control but before the device can take input (the consent
    prompt still closing, a hand-over not applied yet) is refused there by design, as a person's would be;
    the test clicks again, as a person would, rather than failing on the first one."""
    async def arrived() -> bool:  # xdotool in a thread: the server and agent under test share this loop
        x, y = await asyncio.to_thread(pointer_at, display)
        return abs(x - target[0]) <= 3 and abs(y - target[1]) <= 3

    async with asyncio.timeout(timeout):
        while not await arrived():
            await click()
            with contextlib.suppress(AssertionError):
                await wait_until(arrived, timeout=3, what=f"the click reached the device at {target}")


async def wait_window(display: str, title: str, *, present: bool = True, timeout: float = 10.0) -> None:
    def visible() -> bool:
        result = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", title],
                                env={**os.environ, "DISPLAY": display}, capture_output=True, timeout=10,
                                check=False)
        return (result.returncode == 0 and bool(result.stdout.strip())) == present

    async def check() -> bool:
        return await asyncio.to_thread(visible)

    await wait_until(check, timeout=timeout, interval=0.05, what=f"window {title!r} present={present}")


def test_find_colour_is_none_on_an_empty_screen(xvfb: XvfbHandle) -> None:  # noqa: F811
    """The button finder does not invent buttons on a black screen."""
    assert find_colour(xvfb.display, "#1b7f3a") is None


def test_policy_writer_round_trips(tmp_path: Path) -> None:
    """write_policy produces a file LocalPolicy reads back."""
    from agent.policy import LocalPolicy

    policy = LocalPolicy.load(write_policy(tmp_path / "p.toml", allow_control=False, prompt_timeout_s=2))
    assert not policy.allow_control and policy.prompt_timeout_s == 2 and not policy.broken
