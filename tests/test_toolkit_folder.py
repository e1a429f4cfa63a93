"""Where files from the technician land, and the indicator's list of transfers: real agent on Xvfb, real Tk windows.

The device user picks the folder in the indicator's *Save to…* window (typed with xdotool, as a
user would); the agent takes it only when it is absolute, has no symlink anywhere in it and the
user may write there, and a file never lands outside it. Every transfer of the session stays
listed on the indicator, both ways.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.consent.tk import TkIndicator
from agent.consent.tk_app import ALLOW_BG, FOLDER_BG, FOLDER_TITLE
from protocol import toolkit as tk
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import (
    click_colour,
    configure_agent,
    install_test_auth,
    start_session,
    viewer_for,
    wait_window,
    xdotool,
)
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


async def pick_folder(display: str, indicator: TkIndicator, path: str) -> None:
    """Click *Save to…* on the indicator, type ``path`` over the default and press Enter, as the user would."""
    await click_colour(display, FOLDER_BG)
    await wait_window(display, FOLDER_TITLE, timeout=20)
    await wait_until(lambda: indicator._prompts is not None and indicator._prompts.suspended(), timeout=10,
                     what="remote input suspended while the folder window is open")
    window = (await asyncio.to_thread(xdotool, display, "search", "--onlyvisible", "--name", FOLDER_TITLE)).split()[0]
    await asyncio.to_thread(xdotool, display, "windowfocus", "--sync", window)
    await asyncio.to_thread(xdotool, display, "type", "--delay", "15", path)
    await asyncio.to_thread(xdotool, display, "key", "Return")
    await wait_window(display, FOLDER_TITLE, present=False, timeout=20)
    await asyncio.to_thread(xdotool, display, "mousemove", "0", "0")  # the next click's --sync needs a real move


async def test_user_picks_the_folder_and_the_indicator_lists_every_transfer(
        tmp_path: Path, xvfb: XvfbHandle, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Downloads by default; a picked folder takes the next files (the user's, hash checked); a symlinked or relative
    folder is refused and changes nothing; the indicator lists the two sent files and the fetched one, in order."""
    home = tmp_path / "home"
    downloads, projects, outside = home / "Downloads", home / "Projects", tmp_path / "elsewhere"
    for folder in (downloads, projects, outside):
        folder.mkdir(parents=True)
    (home / "shortcut").symlink_to(outside)
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(downloads))
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    first.write_bytes(os.urandom(300 * 1024 + 1))
    second.write_bytes(os.urandom(200 * 1024 + 3))
    log_file = home / "app.log"
    log_file.write_text("device log\n" * 100)
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await start_session(server, state.device_id, reason="files")
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for(lambda v: v.caps is not None, 20)
                indicator = next(iter(agent.sessions.running.values())).indicator
                assert isinstance(indicator, TkIndicator)
                await wait_until(lambda: indicator.folder_shown == str(downloads), timeout=10,
                                 what="Downloads shown as the default folder")

                done = await viewer.send_file(str(first))
                assert isinstance(done, tk.FileDone) and (downloads / "first.bin").read_bytes() == first.read_bytes()

                # The list appears with the first transfer and the window grows: click once it has.
                await wait_until(lambda: len(indicator.transfers_shown) == 1, timeout=10, what="first transfer listed")
                await pick_folder(xvfb.display, indicator, str(projects))
                await wait_until(lambda: indicator.folder_shown == str(projects), timeout=10, what="Projects taken")
                # Closed: the folder window holds remote input no more (the chat window may, while it has the keyboard).
                await wait_until(lambda: indicator._typing_held or not indicator._prompts.suspended(),  # type: ignore[union-attr]
                                 timeout=10, what="remote input back after the folder window closed")
                done = await viewer.send_file(str(second))
                assert isinstance(done, tk.FileDone), done
                landed = projects / "second.bin"
                assert hashlib.sha256(landed.read_bytes()).hexdigest() == done.sha256
                assert landed.stat().st_uid == os.geteuid() and not (downloads / "second.bin").exists()

                await wait_until(lambda: len(indicator.transfers_shown) == 2, timeout=10, what="second transfer listed")
                for refused in (str(home / "shortcut"), "Projects/../.."):
                    await pick_folder(xvfb.display, indicator, refused)
                toolkit_folder = indicator.folder_shown
                again = await viewer.send_file(str(first), name="again.bin")
                assert isinstance(again, tk.FileDone)
                assert toolkit_folder == str(projects) and (projects / "again.bin").exists()
                assert list(outside.iterdir()) == []  # nothing went through the symlink

                fetched = asyncio.ensure_future(viewer.fetch_file(str(log_file), str(tmp_path / "copy.log")))
                await click_colour(xvfb.display, ALLOW_BG, timeout=20)  # the user hands the file over
                end = await fetched
                assert isinstance(end, tk.FileEnd), end

                await wait_until(lambda: len(indicator.transfers_shown) == 4, timeout=10, what="four transfers listed")
                assert indicator.transfers_shown == [
                    f"ann sent first.bin to Downloads ({first.stat().st_size} bytes)",
                    f"ann sent second.bin to Projects ({second.stat().st_size} bytes)",
                    f"ann sent again.bin to Projects ({first.stat().st_size} bytes)",
                    f"you sent app.log to ann ({log_file.stat().st_size} bytes)",
                ]
