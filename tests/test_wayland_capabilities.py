"""The device's hello names the screen backend it would use; the server keeps it; the device API returns it.

A real server and an in-process agent (direct mode) whose environment is the user's session: a
headless GNOME (Mutter's API on the bus → ``wayland-mutter``), the same with the portal forced by
configuration (``wayland-portal``), an X11 session (``x11``), and no desktop at all (not said).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.config import AgentConfig
from protocol.screen_backend import capability, from_capabilities
from tests.harness import enroll_agent, running_agent, running_server
from tests.test_session_helpers import api, install_test_auth
from tests.wayland import start_mutter


async def _reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                    display: str | None = None) -> object:
    """The device API's ``screen_backend`` once an agent with ``env`` is connected."""
    for key in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE", "HELPLINE_SCREEN_BACKEND", "HELPLINE_WAYLAND_BACKEND"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HELPLINE_AGENT_CONFIG", str(tmp_path / "no-agent.toml"))
    async with running_server(tmp_path / "server") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, display=display)
        async with running_agent(state, config) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 30)
            status, body = await api(server, "GET", f"/api/v1/devices/{state.device_id}", "root")
            assert status == 200, body
            conn = server.connections.get(state.device_id)
            assert conn is not None and conn.hello is not None
            assert from_capabilities(conn.hello.capabilities) == body["screen_backend"]
            return body["screen_backend"]
    raise AssertionError("unreachable")


async def test_the_device_api_names_the_screen_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handle = start_mutter(1920, 1080, log_dir=tmp_path)
    try:
        session = {key: value for key, value in handle.env().items()
                   if key in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "WAYLAND_DISPLAY", "DISPLAY",
                              "XDG_SESSION_TYPE", "XAUTHORITY")}
        assert await _reported(tmp_path / "a", monkeypatch, session, handle.display) == "wayland-mutter"
        forced = {**session, "HELPLINE_WAYLAND_BACKEND": "portal"}
        assert await _reported(tmp_path / "b", monkeypatch, forced, handle.display) == "wayland-portal"
    finally:
        handle.stop()
    assert await _reported(tmp_path / "c", monkeypatch, {"XDG_SESSION_TYPE": "x11"}, ":57") == "x11"
    assert await _reported(tmp_path / "d", monkeypatch, {}, None) is None  # no desktop: nothing said


def test_capability_strings_are_bounded() -> None:
    """Only the three names travel; anything else in a hello is ignored."""
    assert capability("wayland-portal") == ["screen.backend:wayland-portal"]
    assert capability("") == [] and capability("vnc") == []
    assert from_capabilities(["session", "screen.backend:x11"]) == "x11"
    assert from_capabilities(["screen.backend:vnc", "screen.backend:"]) is None
    assert from_capabilities([]) is None

