"""A Wayland screen session through the per-user session helper (issue 14 with issue 21's split).

Real parts: a server, the agent service in this (root) process with ``desktop = "helper"``, logind's
stand-in naming a *wayland* session of a local user created for the test as the active one, a
headless Mutter stack (tests/wayland.py) running **as that user** (its session bus admits only
them), and ``helpline agent session-helper`` as a real process of that user whose environment is
the Wayland session's (``WAYLAND_DISPLAY``, ``DBUS_SESSION_BUS_ADDRESS``, ``XDG_RUNTIME_DIR``,
``XDG_SESSION_TYPE=wayland``, XWayland's ``DISPLAY``). The helper's Tk prompt on XWayland is found
in its window's pixels and answered with a real xdotool click.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.logind_standin import FakeSession, LogindStandIn, private_bus
from tests.test_screen_support import tk_app
from tests.test_session_helper import LocalUser, helper_process, local_user
from tests.test_session_helpers import api, install_test_auth, viewer_for
from tests.test_wayland import TIMEOUT, colour_box
from tests.wayland import MutterHandle, answer_xwayland_prompt, start_mutter

#: Run alone, after the parallel pass (scripts/test): creates local users (useradd).
pytestmark = pytest.mark.serial

#: The variables of the Wayland session a display manager hands to the user's processes.
SESSION_VARS = ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "WAYLAND_DISPLAY", "DISPLAY", "XAUTHORITY",
                "XDG_SESSION_TYPE")


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[tuple[LocalUser, MutterHandle, LogindStandIn, str, Path]]:
    """A local user with a headless Mutter of their own, logind's stand-in, a directory for the socket."""
    if os.getuid() != 0:
        pytest.fail("this test creates a user and runs the service as root")
    scratch = Path(tempfile.mkdtemp(prefix="helpline-wlh-"))
    os.chmod(scratch, 0o755)  # the helper (another user) must reach the socket below it
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, scratch, True)
        user = stack.enter_context(local_user("w"))
        handle = start_mutter(1920, 1080, log_dir=tmp_path, user=(user.uid, user.gid))
        stack.callback(handle.stop)
        bus = stack.enter_context(private_bus(scratch / "dbus"))
        standin = LogindStandIn(bus).start()
        stack.callback(standin.stop)
        yield user, handle, standin, bus, scratch / "run"


def children(pid: int) -> list[str]:
    """Command names of ``pid``'s children."""
    out = subprocess.run(["ps", "-o", "comm=", "--ppid", str(pid)], capture_output=True, text=True,
                         check=False).stdout
    return out.split()


async def test_the_session_helper_streams_and_controls_the_wayland_desktop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        desk: tuple[LocalUser, MutterHandle, LogindStandIn, str, Path]) -> None:
    """The user's helper asks on XWayland, captures through Mutter (its gst child, not the service's), the viewer
    sees the desktop change and a click reaches a window; the live stats say wayland-mutter; the server records
    the user's answer."""
    user, wl, standin, bus, socket_dir = desk
    monkeypatch.setenv("XAUTHORITY", wl.xauthority)  # the test's own Tk window on the user's XWayland
    standin.set_sessions(FakeSession("w1", user.uid, user.name, wl.display, type="wayland", active=True))
    policy = tmp_path / "policy.toml"
    policy.write_text("prompt_timeout_s = 60\ndecline_cooldown_s = 0\n")
    session_env = {k: v for k, v in wl.env().items() if k in SESSION_VARS}
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0, policy_file=policy, desktop="helper",
                             desktop_socket=socket_dir / "desktop.sock", logind_bus=bus)
        async with running_agent(state, config) as agent, tk_app(wl.display) as app:
            broker = agent.parts.desktop
            assert broker is not None
            await asyncio.wait_for(broker.listening.wait(), 30)
            await asyncio.wait_for(agent.client.ready.wait(), 30)
            with helper_process(user, "w1", wl.display, socket_dir / "desktop.sock", tmp_path / "helper.log",
                                extra_env=session_env) as helper:
                await wait_until(lambda: "w1" in broker.helpers, timeout=60, what="the Wayland helper accepted")
                assert broker.helpers["w1"].peer.uid == user.uid
                status, body = await api(server, "POST", f"/api/v1/devices/{state.device_id}/sessions", "ann",
                                         {"mode": "control", "reason": "wayland via helper"})
                assert status == 201, body
                sid = str(body["session_id"])
                async with viewer_for(server, sid) as viewer:
                    await answer_xwayland_prompt(wl)
                    await viewer.wait_for(lambda v: v.stats.updates >= 1 and v.agent_stats is not None,
                                          timeout=TIMEOUT)
                    assert viewer.framebuffer.shape == (1080, 1920, 3)
                    assert viewer.agent_stats is not None and viewer.agent_stats.backend == "wayland-mutter"
                    # Capture runs in the user's helper (its reader child, helpline-pwcast or gst-launch, reads the
                    # PipeWire stream).
                    assert {"helpline-pwcast", "gst-launch-1.0"} & set(children(helper.pid))
                    assert not {"helpline-pwcast", "gst-launch-1.0"} & set(children(os.getpid()))
                    # A change on the desktop reaches the viewer; a click from the viewer reaches a window.
                    await app.command("fill #12ab34")
                    await viewer.wait_for(lambda v: colour_box(v.framebuffer, "#12ab34") is not None,
                                          timeout=TIMEOUT)
                    found = colour_box(viewer.framebuffer, "#12ab34")
                    assert found is not None
                    x0, y0 = found[0] - 640, found[1]  # the Tk script's probe sits at canvas (640, 0)
                    deadline = asyncio.get_running_loop().time() + TIMEOUT
                    while True:  # Mutter may drop a fresh RemoteDesktop session's first events (test_wayland.py)
                        await viewer.click(x0 + 330, y0 + 312)
                        try:
                            await app.expect(lambda line: line == "clicked", 3.0)
                            break
                        except TimeoutError:
                            if asyncio.get_running_loop().time() > deadline:
                                raise

                async def ended() -> bool:
                    _status, got = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
                    return bool(got.get("state") == "ended")

                await wait_until(ended, timeout=30, what="the session ended on the server")
                _status, got = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
                assert got["answered_by"] == "user", got
                await wait_until(lambda: "gst-launch-1.0" not in children(helper.pid), timeout=10,
                                 what="the helper's gst child gone with the session")
