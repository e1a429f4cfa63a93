"""The remote shell in helper mode: the root service hands the session to the user's session helper, and the
shell runs there as that user (real helper processes, real users, a real pty); root is refused there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.consent.tk_app import ALLOW_BG, PROMPT_TITLE
from agent.shell.client import ShellViewer
from certs import tls
from protocol import shell as sh
from tests.harness import console_url, enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helper import Desk, agent_config, desk, helper_process, request  # noqa: F401 - fixture
from tests.test_session_helpers import click_colour, install_test_auth, wait_window

#: Run alone, after the parallel pass (scripts/test): creates local users (useradd).
pytestmark = pytest.mark.serial


async def test_shell_runs_in_the_users_helper_as_that_user(tmp_path: Path, desk: Desk) -> None:  # noqa: F811
    """id -u in the shell is the active user's uid (the helper's), the tty a pty; a root shell is refused; the
    device policy's shell idle timeout reaches the helper (its shell is hung up, reason "idle timeout")."""
    desk.sessions(active="c1")
    config = agent_config(tmp_path, desk)
    assert config.policy_file is not None
    config.policy_file.write_text(config.policy_file.read_text() + "allow_shell = true\nallow_root_shell = true\n"
                                  "shell_idle_timeout_s = 4\n")
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        async with running_agent(state, config) as agent:
            broker = agent.parts.desktop
            assert broker is not None
            await asyncio.wait_for(broker.listening.wait(), 30)
            await asyncio.wait_for(agent.client.ready.wait(), 30)
            with helper_process(desk.a, "c1", desk.xa.display, desk.socket, tmp_path / "helper-a.log"):
                await wait_until(lambda: "c1" in broker.helpers, timeout=60, what="the session helper accepted")
                sid = await request(server, state.device_id, "control")
                url = f"wss://localhost:{server.console_port}/api/v1/sessions/{sid}/stream"
                ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
                async with ShellViewer(url, ssl_context=ctx,
                                       headers={"Origin": console_url(server), "X-Test-User": "ann"}) as viewer:
                    await wait_window(desk.xa.display, PROMPT_TITLE, timeout=30)
                    await click_colour(desk.xa.display, ALLOW_BG, timeout=20)
                    await viewer.wait_for(lambda v: v.caps is not None, 30)
                    assert viewer.caps is not None and "shell" in viewer.caps.allowed
                    await viewer.shell_send(sh.Open(root=True))
                    await viewer.until(lambda: bool(viewer.of(sh.Error)), what="root refused in helper mode")
                    await viewer.shell_send(sh.Open(cols=80, rows=24))
                    await viewer.until(lambda: bool(viewer.of(sh.Opened)), what="shell.opened")
                    opened = viewer.of(sh.Opened)[0]
                    assert isinstance(opened, sh.Opened) and opened.uid == desk.a.uid and not opened.root
                    await viewer.keys("echo ID=$(id -u) TTY=$(tty)\r")
                    await viewer.until(lambda: f"ID={desk.a.uid} TTY=/dev/pts/".encode() in viewer.output,
                                       what="id -u in the helper's shell")
                    await viewer.keys("exit 0\r")
                    await viewer.until(lambda: bool(viewer.of(sh.Exit)), what="shell.exit")
                    await viewer.shell_send(sh.Open(cols=80, rows=24))  # left alone: the policy's 4 s end it
                    await viewer.until(lambda: len(viewer.of(sh.Exit)) == 2, 60, "the idle hang-up")
                    idle = viewer.of(sh.Exit)[1]
                    assert isinstance(idle, sh.Exit) and idle.reason == "idle timeout", idle
