"""The remote shell from the console in Chromium: the Shell tab's xterm.js terminal on a real pty of a real agent.

A command typed in the browser terminal runs on the device and its output appears; `id -u` is the session
user's uid and `tty` names a pty; Ctrl-C stops `sleep 100`; after the shell exits, the recording replays the
same output into the terminal. The consent prompt is answered on Xvfb with xdotool.
"""

from __future__ import annotations

import asyncio
import pwd
from pathlib import Path

import psutil
import pytest
from playwright.async_api import Page, expect

from agent.config import AgentConfig
from agent.consent.tk_app import ALLOW_BG
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_accounts_support import make_user
from tests.test_console_support import console_browser
from tests.test_session_helpers import click_colour, configure_agent, write_policy
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

#: Run alone, after the parallel pass (scripts/test): counts every `sleep 100` on the box by uid.
pytestmark = pytest.mark.serial

USER = "nobody"
SCREEN_TEXT = """() => {
  const term = document.getElementById("shell-tab").shell.term;
  if (!term) return "";
  const buf = term.buffer.active, out = [];
  for (let i = 0; i < buf.length; i++) out.push(buf.getLine(i).translateToString(true));
  return out.join("\\n");
}"""


async def terminal_text(page: Page) -> str:
    return str(await page.evaluate(SCREEN_TEXT))


def sleeping(uid: int) -> bool:
    """Is `sleep 100` running as the shell's user?"""
    for proc in psutil.process_iter(["name", "cmdline", "uids"]):
        info = proc.info
        if info["name"] == "sleep" and info["cmdline"] == ["sleep", "100"] and info["uids"] and info["uids"].real == uid:
            return True
    return False


async def test_shell_tab_in_the_console(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Typed in xterm.js, run on the device's pty as the session user; Ctrl-C interrupts; the recording replays."""
    uid = pwd.getpwnam(USER).pw_uid
    policy = write_policy(tmp_path / "policy.toml", allow_shell=True)
    async with running_server(tmp_path / "srv", session_recording=True) as server:
        tech = await make_user(server, "tess", "technician", groups={"lab": None})
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, policy_file=policy)
        async with running_agent(state, config, setup=configure_agent(xvfb.display, shell_user=USER)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            async with console_browser(server) as console:
                page = console.page
                await console.login(tech)
                await page.goto(f"{console.base}/#/devices/{state.device_id}")
                await page.click("#start-control")
                await page.fill("#session-reason", "ticket 9: read the log")
                await page.click("#session-confirm")
                await click_colour(xvfb.display, ALLOW_BG, timeout=15)
                await expect(page.locator("#toolkit-caps")).to_have_attribute("data-allowed", "chat,files,clipboard,shell",
                                                                              timeout=15_000)
                await page.click("#tab-shell")
                await expect(page.locator("#shell-tab")).to_be_visible()
                await page.click("#shell-open")
                await expect(page.locator("#shell-tab")).to_have_attribute("data-state", "running", timeout=15_000)
                await expect(page.locator("#shell-status")).to_contain_text(f"uid {uid}")
                await page.click("#shell-terminal")
                await page.keyboard.type("echo U=$(id -u) T=$(tty) H=$((6*7))")
                await page.keyboard.press("Enter")

                async def shows(text: str) -> bool:
                    return text in await terminal_text(page)

                await wait_until(lambda: shows(f"U={uid} T=/dev/pts/"), timeout=20, what="id -u and tty output")
                assert "H=42" in await terminal_text(page)

                await page.keyboard.type("sleep 100")
                await page.keyboard.press("Enter")
                await wait_until(lambda: sleeping(uid), timeout=20, what="sleep 100 running")
                await page.keyboard.press("Control+c")
                await wait_until(lambda: not sleeping(uid), timeout=20, what="Ctrl-C stopping sleep 100")
                await page.keyboard.type("echo after-ctrl-c")
                await page.keyboard.press("Enter")
                await wait_until(lambda: shows("\nafter-ctrl-c"), timeout=20, what="the shell after Ctrl-C")
                await console.shot("shell")
                await page.keyboard.type("exit")
                await page.keyboard.press("Enter")
                await expect(page.locator("#shell-tab")).to_have_attribute("data-state", "exited", timeout=15_000)
                live = await terminal_text(page)

                await page.click("#end-session")
                await page.click("#tab-shell")
                await page.click("#shell-play")
                await expect(page.locator("#shell-tab")).to_have_attribute("data-replay", "done", timeout=30_000)
                replayed = await terminal_text(page)
                for line in (f"U={uid} T=/dev/pts/", "H=42", "after-ctrl-c"):
                    assert line in replayed
                assert [x.rstrip() for x in replayed.splitlines() if x.strip()] == \
                    [x.rstrip() for x in live.splitlines() if x.strip()]
                assert not [e for e in console.errors if e.startswith("pageerror")], console.errors
                assert console.csp_violations() == []
