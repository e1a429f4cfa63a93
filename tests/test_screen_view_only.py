"""A view-only device (issue 14: a wlroots desktop's portal offers ScreenCast but no RemoteDesktop) as the
messages carry it, as the server stores it, and as the console shows it (Chromium, real server).

Service mode end to end (a helper saying view-only, the device API, the 409) is in
tests/test_gaps19_screen_backend.py; direct mode's hello and refusal in tests/test_wayland_screencast_only.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
from playwright.async_api import expect

from protocol import codec
from protocol.desktop import LENGTH, DesktopConnection, Hello
from protocol.screen_backend import ScreenBackendChanged
from server import devices
from server.app import HelplineServer
from server.cmdb import screen_backend
from tests.harness import running_server
from tests.test_accounts_support import make_user
from tests.test_console_support import console_browser
from tests.test_session_helpers import api, install_test_auth


def test_view_only_travels_in_both_messages_and_older_peers_still_decode() -> None:
    """``device.screen_backend`` and the helper's hello round-trip ``view_only``; the same messages from an older
    peer (no field) decode with ``view_only`` False."""
    for view_only in (True, False):
        change = ScreenBackendChanged(backend="wayland-portal", view_only=view_only)
        assert codec.decode(codec.encode(change)) == change
    old = codec.decode('{"type": "device.screen_backend", "v": 1, "id": "a1", "backend": "wayland-portal"}')
    assert isinstance(old, ScreenBackendChanged) and old.backend == "wayland-portal" and old.view_only is False

    service = DesktopConnection("service")
    hello = Hello(session_id="c1", display=":5", screen_backend="wayland-portal", view_only=True)
    helper = DesktopConnection("helper")
    helper.send(hello)
    for chunk in helper.data_to_send():
        service.receive_data(chunk)
    assert service.events_received() == [hello] and service.error is None
    body = msgspec.msgpack.encode({"t": "hello", "session_id": "c1", "display": ":5", "screen_backend": "x11"})
    service.receive_data(LENGTH.pack(len(body)) + body)
    [old_hello] = service.events_received()
    assert isinstance(old_hello, Hello) and old_hello.screen_backend == "x11" and old_hello.view_only is False


async def _device(server: HelplineServer, device_id: str, backend: str, view_only: bool) -> None:
    async with server.db.transaction() as tx:
        await devices.register(tx, device_id, "lab", "s-" + device_id, time.time() + 86400, hostname=device_id)
    await screen_backend.store(server.db, device_id, backend, view_only=view_only)


async def test_the_record_counts_view_only_beside_the_portal_only(tmp_path: Path) -> None:
    """The device API's ``screen_view_only`` follows the stored flag; a flag left beside another backend (a node of
    the previous release stored the backend, not the flag) is not taken for view-only."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        await make_user(server, "tess", "technician", groups={"lab": None})
        await _device(server, "pc-wlr", "wayland-portal", True)
        await _device(server, "pc-x", "x11", False)
        await _device(server, "pc-stale", "wayland-portal", True)
        await server.db.execute("UPDATE devices SET screen_backend = 'x11' WHERE id = 'pc-stale'")
        for device_id, expected in (("pc-wlr", ("wayland-portal", True)), ("pc-x", ("x11", False)),
                                    ("pc-stale", ("x11", False))):
            status, body = await api(server, "GET", f"/api/v1/devices/{device_id}", "ann")
            assert status == 200, body
            assert (body["screen_backend"], body["screen_view_only"]) == expected, device_id
            assert await screen_backend.stored_view_only(server.db, device_id) is expected[1]


async def test_the_console_disables_control_on_a_view_only_device(tmp_path: Path) -> None:
    """A device stored as view-only: "view only" beside its backend, Control disabled with the reason as its title,
    View enabled. A device on X11: Control enabled, no "view only"."""
    async with running_server(tmp_path / "srv") as server:
        tech = await make_user(server, "tess", "technician", groups={"lab": None})
        await _device(server, "pc-wlr", "wayland-portal", True)
        await _device(server, "pc-x", "x11", False)
        async with console_browser(server) as console:
            page = console.page
            await console.login(tech)
            await page.goto(f"{console.base}/#/devices/pc-wlr")
            await expect(page.locator("#screen-backend")).to_contain_text("wayland-portal")
            await expect(page.locator("#screen-view-only")).to_have_text("view only")
            control = page.locator("#start-control")
            await expect(control).to_be_disabled()
            await expect(control).to_have_attribute("title", "View only: this device's desktop offers no remote input "
                                                    "(its screen-sharing portal has no RemoteDesktop, as on sway and "
                                                    "other wlroots desktops)")
            await expect(page.locator("#start-view")).to_be_enabled()

            await page.goto(f"{console.base}/#/devices/pc-x")
            await expect(page.locator("#device-hostname")).to_have_text("pc-x")
            await expect(page.locator("#screen-backend")).to_have_text("x11")
            await expect(page.locator("#screen-view-only")).to_have_count(0)
            await expect(page.locator("#start-control")).to_be_enabled()
            assert await page.locator("#start-control").get_attribute("title") is None
            assert [e for e in console.errors if "401" not in e] == [], console.errors
