"""The toolkit from the console in Chromium: chat both ways, a file sent and one fetched, clipboard to the device,
and the chat in the device's session history.

A real agent on Xvfb; the consent prompt, the device's chat window and the file request are answered there with
xdotool, like the person at the device would.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from playwright.async_api import expect

from agent.config import AgentConfig
from agent.consent.tk_app import ALLOW_BG, CHAT_TITLE, FETCH_TITLE
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_accounts_support import make_user
from tests.test_console_support import console_browser
from tests.test_session_helpers import click_colour, configure_agent, wait_window
from tests.test_toolkit_e2e import device_clipboard, type_in_chat
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


async def test_toolkit_from_the_console(tmp_path: Path, xvfb: XvfbHandle,  # noqa: F811
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Chat both ways, send a file (lands with its hash), fetch one (the user allows; hash shown equal), paste to the
    device clipboard — all as text, no CSP violation, no page error."""
    downloads = tmp_path / "Downloads"
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(downloads))
    upload = tmp_path / "setup.bin"
    upload.write_bytes(os.urandom(600 * 1024 + 5))
    remote = tmp_path / "app.log"
    remote.write_bytes(os.urandom(300 * 1024 + 1))
    async with running_server(tmp_path / "srv") as server:
        tech = await make_user(server, "tess", "technician", groups={"lab": None})
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            async with console_browser(server) as console:
                page = console.page
                await console.login(tech)
                await page.goto(f"{console.base}/#/devices/{state.device_id}")
                await page.click("#start-view")
                await page.fill("#session-reason", "ticket 7: installer")
                await page.click("#session-confirm")
                await click_colour(xvfb.display, ALLOW_BG, timeout=15)
                await expect(page.locator("#toolkit-caps")).to_have_attribute("data-allowed", "chat,files,clipboard",
                                                                              timeout=15_000)

                await page.fill("#chat-input", "Hi <b>there</b>, sending the installer")
                await page.press("#chat-input", "Enter")
                log = page.locator("#chat-log")
                await expect(log).to_contain_text("tess: Hi <b>there</b>, sending the installer", timeout=10_000)
                await wait_window(xvfb.display, CHAT_TITLE, timeout=20)
                await asyncio.to_thread(type_in_chat, xvfb.display, "OK, ready")
                await expect(log.locator("li.chat-user")).to_contain_text("User: OK, ready", timeout=15_000)
                assert await log.locator("b").count() == 0

                await page.set_input_files("#file-send", str(upload))
                sent = page.locator("#transfers li").first
                await expect(sent).to_have_attribute("data-state", "done", timeout=30_000)
                assert (downloads / "setup.bin").read_bytes() == upload.read_bytes()
                await expect(sent).to_contain_text(hashlib.sha256(upload.read_bytes()).hexdigest()[:16])

                await page.fill("#fetch-path", str(remote))
                await page.click("#fetch-start")
                await wait_window(xvfb.display, FETCH_TITLE, timeout=20)
                await click_colour(xvfb.display, ALLOW_BG, timeout=15)
                fetched = page.locator("#transfers li").nth(1)
                await expect(fetched).to_have_attribute("data-state", "done", timeout=30_000)
                assert await fetched.get_attribute("data-sha256") == hashlib.sha256(remote.read_bytes()).hexdigest()
                await expect(fetched.locator("a.fetched")).to_have_attribute("download", "app.log")

                await page.check("#clip-to-device")
                await page.fill("#clip-paste", "lpstat -p")
                await page.click("#clip-send")

                async def pasted() -> bool:
                    return await asyncio.to_thread(device_clipboard, xvfb.display) == "lpstat -p"

                await wait_until(pasted, timeout=20, what="the console's paste on the device clipboard")
                await console.shot("toolkit")
                session_id = page.url.rsplit("/", 1)[1]
                await page.goto(f"{console.base}/#/devices/{state.device_id}/remote")
                cell = page.locator(f"tr[data-session='{session_id}'] td.session-chat")
                await cell.locator("summary").click(timeout=15_000)
                await expect(cell.locator("li.chat-user")).to_contain_text("User: OK, ready", timeout=10_000)
                await expect(cell.locator("li.chat-technician")).to_contain_text("Hi <b>there</b>")
                assert await cell.locator("b").count() == 0
                assert console.csp_violations() == []
                assert not [e for e in console.errors if e.startswith("pageerror")]


#: Recorded in the page: the largest Blob/File read at once, and the sizes WebCrypto was asked to digest.
_READ_SPY = """
window.__reads = { maxRead: 0, digests: [] };
const readWhole = Blob.prototype.arrayBuffer;
Blob.prototype.arrayBuffer = function () {
  window.__reads.maxRead = Math.max(window.__reads.maxRead, this.size);
  return readWhole.call(this);
};
const digest = crypto.subtle.digest.bind(crypto.subtle);
crypto.subtle.digest = (algorithm, data) => { window.__reads.digests.push(data.byteLength); return digest(algorithm, data); };
"""


async def test_console_hashes_files_slice_by_slice(tmp_path: Path, xvfb: XvfbHandle,  # noqa: F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A 10 MB upload (80 chunks) is hashed and sent without ever reading more than one 4 MiB slice of it at once,
    and a 1 MB fetch is hashed chunk by chunk as it arrives: both hashes match the device's, WebCrypto never used."""
    downloads = tmp_path / "Downloads"
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(downloads))
    upload = tmp_path / "image.iso"
    upload.write_bytes(os.urandom(10 * 1024 * 1024 + 123))
    remote = tmp_path / "trace.bin"
    remote.write_bytes(os.urandom(1024 * 1024 + 7))
    async with running_server(tmp_path / "srv") as server:
        tech = await make_user(server, "tess", "technician", groups={"lab": None})
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            async with console_browser(server) as console:
                page = console.page
                await page.add_init_script(_READ_SPY)
                await console.login(tech)
                await page.goto(f"{console.base}/#/devices/{state.device_id}")
                await page.click("#start-view")
                await page.fill("#session-reason", "ticket 8: big file")
                await page.click("#session-confirm")
                await click_colour(xvfb.display, ALLOW_BG, timeout=15)
                await expect(page.locator("#toolkit-caps")).to_have_attribute("data-allowed", "chat,files,clipboard",
                                                                              timeout=15_000)
                await page.set_input_files("#file-send", str(upload))
                sent = page.locator("#transfers li").first
                await expect(sent).to_have_attribute("data-state", "done", timeout=60_000)
                digest = hashlib.sha256(upload.read_bytes()).hexdigest()
                assert await sent.get_attribute("data-sha256") == digest
                assert hashlib.sha256((downloads / "image.iso").read_bytes()).hexdigest() == digest

                await page.fill("#fetch-path", str(remote))
                await page.click("#fetch-start")
                await wait_window(xvfb.display, FETCH_TITLE, timeout=20)
                await click_colour(xvfb.display, ALLOW_BG, timeout=15)
                fetched = page.locator("#transfers li").nth(1)
                await expect(fetched).to_have_attribute("data-state", "done", timeout=30_000)
                assert await fetched.get_attribute("data-sha256") == hashlib.sha256(remote.read_bytes()).hexdigest()

                reads = await page.evaluate("window.__reads")
                assert 0 < reads["maxRead"] <= 4 * 1024 * 1024, reads  # slices, never the whole 10 MB file
                assert reads["digests"] == [], reads  # no whole-buffer WebCrypto digest either way
                assert console.csp_violations() == []
                assert not [e for e in console.errors if e.startswith("pageerror")]
