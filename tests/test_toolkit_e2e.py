"""The in-session toolkit end to end: real server, real agent on Xvfb, the real Tk prompt, the reference viewer."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.consent.tk_app import ALLOW_BG, CHAT_TITLE, DENY_BG, FETCH_TITLE
from protocol import toolkit as tk
from server import audit
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import (
    api,
    click_colour,
    configure_agent,
    find_colour,
    install_test_auth,
    start_session,
    viewer_for,
    wait_for_audit,
    wait_window,
    write_policy,
    xdotool,
)
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and not p.is_symlink()}


def type_in_chat(display: str, text: str) -> None:
    """Click into the chat window's entry line and type ``text`` + Enter, as the user would (xdotool)."""
    window = xdotool(display, "search", "--onlyvisible", "--name", CHAT_TITLE).split()[0]
    geometry = dict(line.split("=", 1) for line in xdotool(display, "getwindowgeometry", "--shell", window).split())
    x, y = int(geometry["X"]) + 60, int(geometry["Y"]) + int(geometry["HEIGHT"]) - 30
    xdotool(display, "mousemove", "--sync", str(x), str(y), "click", "1")
    xdotool(display, "type", "--delay", "20", text)
    xdotool(display, "key", "Return")


async def test_file_to_device_lands_in_downloads_and_hostile_ones_are_refused(
        tmp_path: Path, xvfb: XvfbHandle, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A file reaches Downloads with its hash; ../../.bashrc, a symlinked target, a lying size and 2 GB write nothing
    outside the folder, and the lying one leaves nothing at all."""
    home = tmp_path / "home"
    downloads = home / "Downloads"
    downloads.mkdir(parents=True)
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(downloads))
    outside = home / "precious.txt"
    outside.write_text("keep me")
    (downloads / "report.txt").symlink_to(outside)
    payload = tmp_path / "setup.bin"
    payload.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await start_session(server, state.device_id, reason="send the installer")
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for(lambda v: v.caps is not None, 20)
                assert viewer.caps is not None and viewer.caps.allowed == ["chat", "files", "clipboard"]
                before_home = {p for p in home.iterdir()}

                done = await viewer.send_file(str(payload))
                assert isinstance(done, tk.FileDone), done
                landed = downloads / done.name
                assert done.name == "setup.bin"
                assert hashlib.sha256(landed.read_bytes()).hexdigest() == done.sha256 == \
                    hashlib.sha256(payload.read_bytes()).hexdigest()
                assert landed.stat().st_uid == os.geteuid()

                sneaky = await viewer.send_file(str(payload), name="../../.bashrc")
                assert isinstance(sneaky, tk.FileDone) and "/" not in sneaky.name
                assert (downloads / sneaky.name).exists() and not (home / ".bashrc").exists()

                linked = await viewer.send_file(str(payload), name="report.txt")
                assert isinstance(linked, tk.FileDone) and linked.name == "report (1).txt"
                assert outside.read_text() == "keep me"

                small = tmp_path / "small.txt"
                small.write_bytes(b"x" * 20)
                lying = await viewer.send_file(str(small), size=10,
                                               sha256=hashlib.sha256(b"x" * 10).hexdigest())
                assert isinstance(lying, tk.FileError) and lying.code == "size_mismatch"

                huge = await viewer.send_file(str(small), size=2 * 1024**3, sha256="0" * 64)
                assert isinstance(huge, tk.FileError) and huge.code == "too_large"

                await viewer.say("Hello, I am sending the installer")
                await viewer.wait_for(lambda v: len(v.chat) >= 1, 10)
                assert viewer.chat[0].sender == "technician" and viewer.chat[0].text.startswith("Hello")
                # The technician's line opens the chat window on the device; the user answers in it.
                await wait_window(xvfb.display, CHAT_TITLE, timeout=20)
                await asyncio.to_thread(type_in_chat, xvfb.display, "Thanks <b>got it</b>")
                await viewer.wait_for(lambda v: any(m.sender == "user" for m in v.chat), 20)
                answer = next(m for m in viewer.chat if m.sender == "user")
                assert answer.text == "Thanks <b>got it</b>" and answer.seq == 1
            async def transcript() -> list[dict[str, object]]:
                status, body = await api(server, "GET", f"/api/v1/sessions/{sid}/chat", "ann")
                assert status == 200, body
                return list(body["chat"])

            async def both_lines() -> bool:
                return len(await transcript()) == 2

            await wait_until(both_lines, timeout=10, what="the transcript stored")
            assert [(line["sender"], line["text"]) for line in await transcript()] == [
                ("technician", "Hello, I am sending the installer"), ("user", "Thanks <b>got it</b>")]
            record = await wait_for_audit(server, "session.file_sent")
            details = record["details"] if isinstance(record["details"], dict) else json.loads(record["details"])
            assert details["sha256"] == done.sha256 and details["size"] == done.size
            assert {p for p in home.iterdir()} == before_home
            names = sorted(p.name for p in downloads.iterdir())
            assert names == sorted(["report.txt", "report (1).txt", "setup.bin", sneaky.name])


async def test_local_policy_switches_files_and_chat_off(tmp_path: Path, xvfb: XvfbHandle,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """allow_files/allow_chat = false: caps say so and an offer or a line is refused, whatever the technician asks."""
    downloads = tmp_path / "Downloads"
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(downloads))
    payload = tmp_path / "a.txt"
    payload.write_text("hello")
    policy = write_policy(tmp_path / "policy.toml", allow_files=False, allow_chat=False)
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0, policy_file=policy)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await start_session(server, state.device_id, reason="send the installer")
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for(lambda v: v.caps is not None, 20)
                assert viewer.caps is not None and viewer.caps.allowed == ["clipboard"]
                assert "policy" in viewer.caps.refused["files"]
                refused = await viewer.send_file(str(payload))
                assert isinstance(refused, tk.FileError) and refused.code == "files_refused"
                await viewer.say("hi")
                await viewer.wait_for(lambda v: any(e.code == "chat_refused" for e in v.stats.errors), 10)
                assert not viewer.chat
    assert not downloads.exists() or not any(downloads.iterdir())


_CLIP_OWNER = """
import sys, tkinter
root = tkinter.Tk()
root.withdraw()
root.clipboard_clear()
root.clipboard_append(sys.argv[1])
root.update()
print("owned", flush=True)
root.mainloop()
"""


def device_clipboard(display: str) -> str:
    """The device clipboard's text, read the way any X client reads it (a Tk process of its own)."""
    script = "import tkinter; r = tkinter.Tk(); r.withdraw(); print(r.clipboard_get(), end='')"
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "DISPLAY": display},
                            capture_output=True, text=True, timeout=20, check=False)
    return result.stdout if result.returncode == 0 else ""  # empty: nobody owns the clipboard yet


async def test_clipboard_both_ways_when_switched_on_and_audited_by_hash(
        tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Off until the technician switches it on; then a paste lands on the device clipboard and a copy on the
    device reaches the viewer; the audit records length and hash, not the text."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await start_session(server, state.device_id, reason="send the installer")
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for(lambda v: v.caps is not None, 20)
                await viewer.paste("too early")
                await viewer.wait_for(lambda v: any(e.code == "clipboard_refused" for e in v.stats.errors), 10)

                await viewer.sync_clipboard(to_device=True, from_device=True)
                await viewer.wait_for(lambda v: v.clip_sync is not None, 10)
                await viewer.paste("sudo systemctl restart cups")
                async def pasted() -> bool:
                    return await asyncio.to_thread(device_clipboard, xvfb.display) == "sudo systemctl restart cups"

                await wait_until(pasted,
                                 timeout=20, what="the paste on the device clipboard")

                owner = subprocess.Popen([sys.executable, "-c", _CLIP_OWNER, "copied on the device"],
                                         env={**os.environ, "DISPLAY": xvfb.display}, stdout=subprocess.PIPE,
                                         text=True)
                try:
                    assert owner.stdout is not None and owner.stdout.readline().strip() == "owned"
                    await viewer.wait_for(lambda v: "copied on the device" in v.clipboard, 20)
                finally:
                    owner.kill()
                    owner.wait(10)
                    if owner.stdout is not None:
                        owner.stdout.close()
            record = await wait_for_audit(server, "session.clipboard")
            details = record["details"] if isinstance(record["details"], dict) else json.loads(record["details"])
            assert set(details) == {"session_id", "direction", "length", "sha256"}
            rows = await audit.recent(server.db, limit=50, action="session.clipboard")
            assert {json.loads(r["details"])["direction"] if isinstance(r["details"], str) else r["details"]["direction"]
                    for r in rows} == {"to_device", "from_device"}
            assert "sudo" not in json.dumps(rows, default=str) and "copied on" not in json.dumps(rows, default=str)


async def test_attended_fetch_needs_the_user_and_remote_input_cannot_answer(
        tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """A fetch in an attended session asks the user; the technician's click on Allow through the stream is refused
    (input suspended while the request is on screen); the user's Allow sends the file with its hash; Deny refuses."""
    log_file = tmp_path / "app.log"
    log_file.write_bytes(os.urandom(700 * 1024))
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await start_session(server, state.device_id, "control", "send the installer")
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for(lambda v: v.caps is not None, 20)
                fetch = asyncio.ensure_future(viewer.fetch_file(str(log_file), str(tmp_path / "copy.log"), timeout=60))
                await wait_window(xvfb.display, FETCH_TITLE, timeout=20)
                spot = None
                async with asyncio.timeout(10):
                    while spot is None:
                        spot = await asyncio.to_thread(find_colour, xvfb.display, ALLOW_BG)
                await viewer.click(*spot)
                await viewer.wait_for(lambda v: any(e.code == "input_suspended" for e in v.stats.errors), 10)
                await wait_window(xvfb.display, FETCH_TITLE, timeout=2)  # still there: the technician cannot answer
                assert not fetch.done()
                await click_colour(xvfb.display, ALLOW_BG)
                end = await fetch
                assert isinstance(end, tk.FileEnd), end
                assert end.sha256 == hashlib.sha256(log_file.read_bytes()).hexdigest()
                assert (tmp_path / "copy.log").read_bytes() == log_file.read_bytes()

                denied = asyncio.ensure_future(viewer.fetch_file(str(log_file), str(tmp_path / "no.log"), timeout=60))
                await wait_window(xvfb.display, FETCH_TITLE, timeout=20)
                await click_colour(xvfb.display, DENY_BG)
                refused = await denied
                assert isinstance(refused, tk.FileError) and refused.code == "user_declined"

                # The user typing in the chat window holds the technician's remote input too.
                await viewer.say("Got it, thanks")
                await wait_window(xvfb.display, CHAT_TITLE, timeout=20)
                before = sum(e.code == "input_suspended" for e in viewer.stats.errors)
                await asyncio.to_thread(type_in_chat, xvfb.display, "you're welcome")
                await viewer.wait_for(lambda v: any(m.sender == "user" for m in v.chat), 20)
                await viewer.press_key("KeyA")
                await viewer.wait_for(lambda v: sum(e.code == "input_suspended" for e in v.stats.errors) > before,
                                      10)
            record = await wait_for_audit(server, "session.file_fetched")
            details = record["details"] if isinstance(record["details"], dict) else json.loads(record["details"])
            assert details["sha256"] == end.sha256 and details["name"] == "app.log"


async def test_transfer_resumes_in_a_new_session_after_the_tunnel_drops(
        tmp_path: Path, xvfb: XvfbHandle, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Half a file, the tunnel gone (the technician's side closes, the session ends), a new session: the same file is
    accepted at the acknowledged offset, so nothing is sent twice, and the whole file lands with its hash."""
    downloads = tmp_path / "Downloads"
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(downloads))
    payload = tmp_path / "big.bin"
    payload.write_bytes(os.urandom(4 * 1024 * 1024 + 3))
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await start_session(server, state.device_id, reason="send the installer")
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for(lambda v: v.caps is not None, 20)
                assert await viewer.send_file(str(payload), stop_after=1024 * 1024) is None
                sent = viewer.last_sent
                await viewer.wait_for(lambda v: any(isinstance(e, tk.FileAck) and e.offset == sent
                                                    for e in v.toolkit_events.get(1, [])), 20)
            await wait_until(lambda: not agent.sessions.running, timeout=20, what="the first session ended")
            assert not (downloads / "big.bin").exists()

            sid2 = await start_session(server, state.device_id, reason="send the installer")
            await asyncio.to_thread(xdotool, xvfb.display, "mousemove", "0", "0")  # the prompt's Allow is where we are
            async with viewer_for(server, sid2) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for(lambda v: v.caps is not None, 20)
                done = await viewer.send_file(str(payload))
                accept = next(e for e in viewer.toolkit_events[1] if isinstance(e, tk.FileAccept))
            assert accept.offset == sent  # resumed at the acknowledged offset: not one chunk sent twice
            assert isinstance(done, tk.FileDone) and done.sha256 == digest
            assert (downloads / "big.bin").read_bytes() == payload.read_bytes()
            assert sorted(p.name for p in downloads.iterdir()) == ["big.bin"]  # no partial file left


async def test_server_cap_refuses_a_bigger_file_at_the_relay(tmp_path: Path, xvfb: XvfbHandle,  # noqa: F811
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """session_max_file_mb = 1: a 2 MB offer is answered too_large by the server and never reaches the device."""
    downloads = tmp_path / "Downloads"
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(downloads))
    payload = tmp_path / "two.bin"
    payload.write_bytes(os.urandom(2 * 1024 * 1024))
    async with running_server(tmp_path / "srv", session_max_file_mb=1) as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await start_session(server, state.device_id, reason="send the installer")
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for(lambda v: v.caps is not None, 20)
                refused = await viewer.send_file(str(payload))
                assert isinstance(refused, tk.FileError) and refused.code == "too_large"
                assert "server" in refused.message
    assert not downloads.exists() or not any(downloads.iterdir())
