"""Get help (issue 18), the user's seat: ``helpline help`` and its window reach a real server.

A real server (in the test's loop) and a real agent (direct mode); ``helpline help`` runs as its own
process on a real Xvfb: ``--send`` for scripts, and the window, typed into and clicked with xdotool
like a user would. What arrived is read back through the server's REST API (the queue's routes).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.help import diagnostics, wire
from agent.help.book import Book, Entry
from agent.help.desk import Caller, HelpRefused
from agent.help.local_socket import SOCKET_NAME
from agent.help.window import NOTE_BG, NOTE_FIELD_BG, SEND_BG, SUMMARY_BG, TITLE
from protocol.requests import MAX_SCREENSHOT_BYTES
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.procs import HELPLINE
from tests.test_session_helpers import api, click_colour, install_test_auth, paint_root, wait_window, xdotool
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

# --- units ---------------------------------------------------------------------------------------


def test_diagnostics_report_what_the_device_already_knows(tmp_path: Path) -> None:
    """A nearly full disk, high memory, no default route and a pending reboot each become one finding,
    most serious first; a healthy device reports nothing."""
    flag = tmp_path / "reboot-required"
    flag.write_text("")
    probe = diagnostics.Probe(disks=lambda: [("/", 95.0, 2**30), ("/home", 50.0, 2**34)], memory=lambda: 93.0,
                              default_route=lambda: False, reboot_flag=flag)
    found = diagnostics.collect(probe)
    assert [d.code for d in found] == ["no_network", "disk_full", "memory_high", "reboot_pending"]
    assert "disk / is 95% full (1.0 GiB free)" in found[1].text
    healthy = diagnostics.Probe(disks=lambda: [("/", 40.0, 2**34)], memory=lambda: 30.0, default_route=lambda: True,
                                reboot_flag=tmp_path / "absent")
    assert diagnostics.collect(healthy) == []


def test_default_route_is_read_from_the_kernel_tables(tmp_path: Path) -> None:
    """/proc/net/route with a 00000000 destination on a real interface is a route; only lo, or nothing, is not."""
    v4, v6 = tmp_path / "route", tmp_path / "ipv6_route"
    header = "Iface\tDestination\tGateway\tFlags\n"
    v4.write_text(header + "eth0\t00000000\t0101A8C0\t0003\n")
    v6.write_text("")
    assert diagnostics.has_default_route(v4, v6) is True
    v4.write_text(header + "eth0\t0001A8C0\t00000000\t0001\n")
    assert diagnostics.has_default_route(v4, v6) is False
    assert diagnostics.has_default_route(tmp_path / "none", tmp_path / "none6") is None


def test_the_local_protocol_refuses_what_does_not_fit() -> None:
    """Oversized screenshots, unknown urgencies and unknown fields are refused when a call is decoded."""
    ok = wire.encode(wire.Open(call=1, summary="printer", urgency="high", screenshot=b"\x89PNG\r\n\x1a\n" + b"x"))
    assert isinstance(wire.decode_call(ok), wire.Open)
    big = wire.Open(call=1, summary="x", screenshot=b"\x89PNG\r\n\x1a\n" + b"x" * MAX_SCREENSHOT_BYTES)
    for bad in (wire.encode(big), b'{"t":"open","call":1,"summary":"x","urgency":"panic"}\n',
                b'{"t":"open","call":1,"summary":"x","requester":"root"}\n', b'{"t":"open","call":1,"summary":""}\n'):
        with pytest.raises(wire.WireError):
            wire.decode_call(bad)


def test_the_book_keeps_requests_private_and_forgets_closed_ones(tmp_path: Path) -> None:
    """help-requests.json is 0600 and read back after a restart; a closed request is forgotten after a week."""
    book = Book(tmp_path)
    book.add(Entry(local_id="a" * 32, uid=1000, requester="ann", summary="vpn", urgency="low", created_at=100.0,
                   pending_open="{}"), 100.0)
    assert (tmp_path / "help-requests.json").stat().st_mode & 0o777 == 0o600
    again = Book(tmp_path)
    assert [e.summary for e in again.of(1000)] == ["vpn"] and again.of(0) == []
    again.entries["a" * 32].state = "resolved"
    again.prune(100.0 + 8 * 86400)
    assert again.entries == {}


# --- end to end ----------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


@contextlib.contextmanager
def short_dir() -> Iterator[Path]:
    """A state directory with a short path (a Unix socket path has at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="hl-help-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def desk(tmp_path: Path) -> AsyncIterator[tuple[Any, Any, Path]]:
    """A server and a direct-mode agent whose help socket is up: (server, agent, socket path)."""
    with short_dir() as state_dir:
        async with running_server(tmp_path / "server") as server:
            install_test_auth(server)
            state = await enroll_agent(server, state_dir / "agent")
            async with running_agent(state, AgentConfig(state_dir=state.directory, backoff_cap_s=1.0)) as agent:
                await wait_until(lambda: agent.client.ready.is_set(), timeout=30, what="agent connected")
                sock = state.directory / SOCKET_NAME
                await wait_until(sock.exists, timeout=10, what="help socket")
                yield server, agent, sock


async def requests_of(server: Any) -> list[dict[str, Any]]:
    status, body = await api(server, "GET", "/api/v1/requests", "root")
    assert status == 200, body
    items = body["requests"] if isinstance(body, dict) else body
    return list(items)


async def helpline_help(*args: str, display: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [*HELPLINE, "help", *args], capture_output=True, text=True,
                                   timeout=120, env={**os.environ, "DISPLAY": display})


async def test_help_send_reaches_the_queue_with_screenshot(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """``helpline help --send … --urgency high`` from a script: the request reaches the server with the
    screenshot of the user's display (a PNG of the screen's size), the requester is the OS user, and the
    device learns its number from request.status — kept across a restart of the agent."""
    async with desk(tmp_path) as (server, agent, sock):
        done = await helpline_help("--send", "printer offline", "--urgency", "high", "--details", "since 9:00",
                                   "--socket", str(sock), display=xvfb.display)
        assert done.returncode == 0, done.stderr
        assert "request sent" in done.stdout and "with a screenshot" in done.stdout
        found: list[dict[str, Any]] = []

        async def arrived() -> bool:
            found[:] = await requests_of(server)
            return bool(found)

        await wait_until(arrived, timeout=15, what="the request in the queue")
        request = found[0]
        assert request["summary"] == "printer offline" and request["urgency"] == "high"
        assert request["details"] == "since 9:00" and request["requester"] == getpass.getuser()
        assert request["has_screenshot"] is True and request["state"] == "waiting"
        book = agent.parts.help.book
        await wait_until(lambda: any(e.number == request["number"] for e in book.entries.values()), timeout=15,
                         what="request.status back at the device")
        assert not any(e.pending_open for e in book.entries.values())

        plain = await helpline_help("--send", "no screen please", "--no-screenshot", "--socket", str(sock),
                                    display=xvfb.display)
        assert plain.returncode == 0 and "with a screenshot" not in plain.stdout

        async def two() -> bool:
            found[:] = await requests_of(server)
            return len(found) == 2

        await wait_until(two, timeout=15, what="the second request")
        assert [r["has_screenshot"] for r in sorted(found, key=lambda r: r["number"])] == [True, False]


def _events(proc: subprocess.Popen[str]) -> asyncio.Queue[dict[str, Any]]:
    """The window's JSON event lines, read in a thread."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                loop.call_soon_threadsafe(events.put_nowait, json.loads(line))

    import threading

    threading.Thread(target=pump, daemon=True).start()
    return events


async def next_event(events: asyncio.Queue[dict[str, Any]], kind: str, timeout: float = 30,
                     check: Any = None) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            event = await events.get()
            if event.get("event") == kind and (check is None or check(event)):
                return event


@contextlib.contextmanager
def help_window(sock: Path, display: str, *extra: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([*HELPLINE, "help", "--events", "--socket", str(sock), *extra], stdout=subprocess.PIPE,
                            stderr=sys.stderr, text=True, env={**os.environ, "DISPLAY": display})
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_the_window_sends_with_the_screenshot_the_user_saw_and_follows_the_request(
        tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """The user opens Get help, types the problem, sends with the screenshot shown in the window; a technician
    claims it and the window says "claimed by …"; resolving it shows "resolved"."""
    await asyncio.to_thread(paint_root, xvfb.display, "#3a7d44")
    async with desk(tmp_path) as (server, _agent, sock):
        with help_window(sock, xvfb.display) as proc:
            events = _events(proc)
            ready = await next_event(events, "ready", 60)
            assert ready["title"] == TITLE and ready["screenshot"] > 0
            await wait_window(xvfb.display, TITLE, timeout=30)
            await click_colour(xvfb.display, SUMMARY_BG, timeout=30)
            await asyncio.to_thread(xdotool, xvfb.display, "type", "--delay", "20", "vpn drops every hour")
            await click_colour(xvfb.display, SEND_BG)
            sent = await next_event(events, "sent")
            found: list[dict[str, Any]] = []

            async def arrived() -> bool:
                found[:] = await requests_of(server)
                return bool(found)

            await wait_until(arrived, timeout=15, what="the request in the queue")
            request = found[0]
            assert request["summary"] == "vpn drops every hour" and request["has_screenshot"]
            status, shot = await _raw(server, f"/api/v1/requests/{request['id']}/screenshot")
            assert status == 200 and png_size(shot) == (xvfb.width, xvfb.height)
            await next_event(events, "requests", check=lambda e: any(
                r["local_id"] == sent["local_id"] and r["state"] == "waiting" for r in e["requests"]))

            status, body = await api(server, "POST", f"/api/v1/requests/{request['id']}/claim", "ann")
            assert status == 200, body
            claimed = await next_event(events, "requests", check=lambda e: any(
                r["state"] == "claimed" for r in e["requests"]))
            assert "claimed by" in claimed["requests"][0]["line"] and claimed["requests"][0]["claimed_by"]
            await click_colour(xvfb.display, NOTE_FIELD_BG)
            await asyncio.to_thread(xdotool, xvfb.display, "type", "--delay", "20", "also at home")
            await click_colour(xvfb.display, NOTE_BG)
            await next_event(events, "done", check=lambda e: e["what"] == "note")

            async def noted() -> bool:
                _status, one = await api(server, "GET", f"/api/v1/requests/{request['id']}", "root")
                return any(e["kind"] == "note" and "also at home" in json.dumps(e) for e in one["events"])

            await wait_until(noted, timeout=15, what="the user's note at the server")
            status, body = await api(server, "POST", f"/api/v1/requests/{request['id']}/resolve", "ann",
                                     {"category": "network", "notes": "new VPN profile"})
            assert status == 200, body
            await next_event(events, "requests", check=lambda e: e["requests"][0]["state"] == "resolved")


async def _raw(server: Any, path: str) -> tuple[int, bytes]:
    import aiohttp

    from certs import tls
    from tests.harness import console_url

    ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
    async with aiohttp.ClientSession() as http, http.get(console_url(server) + path, ssl=ctx,
                                                         headers={"X-Test-User": "root"}) as response:
        return response.status, await response.read()





def test_help_frames_only_go_from_helper_to_service_and_back() -> None:
    """help.call / help.closed are helper → service only, help.reply service → helper only (the codec's direction)."""
    from protocol.desktop import DesktopConnection, HelpCall, HelpReply, encode_frame
    from protocol.errors import LocalProtocolError

    service, helper = DesktopConnection("service"), DesktopConnection("helper")
    helper.send(HelpCall(channel="w1", body=b'{"t":"state?","call":1}\n'))
    service.receive_data(b"".join(helper.data_to_send()))
    assert service.events_received() == [HelpCall(channel="w1", body=b'{"t":"state?","call":1}\n')]
    with pytest.raises(LocalProtocolError):
        service.send(HelpCall(channel="w1", body=b""))
    with pytest.raises(LocalProtocolError):
        helper.send(HelpReply(channel="w1", body=b""))
    confused = DesktopConnection("helper")
    confused.receive_data(encode_frame(HelpCall(channel="w1", body=b"x")))
    assert confused.error is not None and confused.events_received() == []


async def test_open_requests_survive_an_agent_restart_and_are_refreshed_on_reconnect(tmp_path: Path) -> None:
    """A request made while the agent is offline is kept (0600 file) and sent when it connects; claimed while
    the agent is stopped, the restarted agent learns "claimed" from the server's status on connect."""
    with short_dir() as state_dir:
        async with running_server(tmp_path / "server") as server:
            install_test_auth(server)
            state = await enroll_agent(server, state_dir / "agent")
            config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0)
            async with running_agent(state, config) as agent:
                desk_ = agent.parts.help
                assert desk_ is not None
                await wait_until(lambda: agent.client.ready.is_set(), timeout=30, what="agent connected")
                local_id = await desk_.open(Caller(uid=1000, user="ann"), wire.Open(call=1, summary="vpn"))
                await wait_until(lambda: desk_.book.entries[local_id].number is not None, timeout=15,
                                 what="the request's number")
            offline = await desk_.open(Caller(uid=1000, user="ann"), wire.Open(call=2, summary="made offline"))
            assert desk_.book.entries[offline].pending_open  # the agent is stopped: kept for the next connection
            assert (state.directory / "help-requests.json").stat().st_mode & 0o777 == 0o600
            found = [r for r in await requests_of(server) if r["summary"] == "vpn"]
            status, body = await api(server, "POST", f"/api/v1/requests/{found[0]['id']}/claim", "ann")
            assert status == 200, body
            async with running_agent(state, config) as again:
                assert again.parts.help is not None
                book = again.parts.help.book
                assert book.entries[local_id].state == "waiting"  # what it knew when it stopped
                await wait_until(lambda: book.entries[local_id].state == "claimed", timeout=30,
                                 what="the status refreshed on reconnect")
                assert book.entries[local_id].claimed_by
                await wait_until(lambda: book.entries[offline].state == "waiting", timeout=30,
                                 what="the offline request sent on connect")
                assert sorted(r["summary"] for r in await requests_of(server)) == ["made offline", "vpn"]
                await again.parts.help.withdraw(Caller(uid=1000, user="ann"), offline)
                await wait_until(lambda: book.entries[offline].state == "withdrawn", timeout=15,
                                 what="the withdrawal confirmed by the server")
                with pytest.raises(HelpRefused):
                    await again.parts.help.withdraw(Caller(uid=1001, user="eve"), local_id)  # not eve's request


def test_the_launcher_opens_get_help_and_the_package_installs_it() -> None:
    """packaging/xdg/helpline-help.desktop runs ``helpline help`` from the menu; scripts/build-deb puts it in
    /usr/share/applications (where desktops look for launchers)."""
    import configparser

    repo = Path(__file__).resolve().parent.parent
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # type: ignore[assignment,method-assign]
    entry.read(repo / "packaging/xdg/helpline-help.desktop")
    desktop = entry["Desktop Entry"]
    assert desktop["Type"] == "Application" and desktop["Exec"] == "/usr/bin/helpline help"
    assert desktop["Terminal"] == "false" and "NoDisplay" not in desktop
    build = (repo / "scripts/build-deb").read_text()
    assert '"$STAGE/usr/share/applications/helpline-help.desktop"' in build
    assert subprocess.run([*HELPLINE, "help", "--help"], capture_output=True, text=True, timeout=60).returncode == 0


async def test_an_open_window_follows_the_agent_through_a_restart(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """The agent stops while the window is open (the window says so), a technician claims the request meanwhile;
    the window reconnects to the restarted agent and shows "claimed by …" from the status sent on connect."""
    with short_dir() as state_dir:
        async with running_server(tmp_path / "server") as server:
            install_test_auth(server)
            state = await enroll_agent(server, state_dir / "agent")
            config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0)
            sock = state.directory / SOCKET_NAME
            with contextlib.ExitStack() as stack:
                async with running_agent(state, config) as agent:
                    await wait_until(lambda: agent.client.ready.is_set() and sock.exists(), timeout=30,
                                     what="agent and help socket")
                    proc = stack.enter_context(help_window(sock, xvfb.display, "--no-screenshot"))
                    events = _events(proc)
                    await next_event(events, "ready", 60)
                    done = await helpline_help("--send", "scanner jams", "--no-screenshot", "--socket", str(sock),
                                               display=xvfb.display)
                    assert done.returncode == 0, done.stderr
                    await next_event(events, "requests", check=lambda e: any(
                        r["state"] == "waiting" for r in e["requests"]))
                await next_event(events, "lost", 30)
                found = await requests_of(server)
                status, body = await api(server, "POST", f"/api/v1/requests/{found[0]['id']}/claim", "ann")
                assert status == 200, body
                async with running_agent(state, config):
                    await next_event(events, "ready", 60)
                    claimed = await next_event(events, "requests", 60, check=lambda e: any(
                        r["state"] == "claimed" for r in e["requests"]))
                    assert "claimed by" in claimed["requests"][0]["line"]


async def test_a_refused_open_is_marked_failed_and_the_device_cap_is_the_servers(tmp_path: Path) -> None:
    """The server refuses request.open (the device has 20 open already): the agent marks the request failed with
    the reason, tells the window and stops sending it on reconnect; the agent's own device-wide cap is the server's
    (three users × 8 each would be 24)."""
    from protocol.requests import MAX_OPEN_PER_DEVICE
    from server.requests import repository as repo

    async with desk(tmp_path) as (server, agent, _sock):
        desk_ = agent.parts.help
        assert desk_ is not None
        device_id = agent.client.state.device_id
        for i in range(MAX_OPEN_PER_DEVICE):  # opened before (another agent install): the server's count is full
            await repo.open_request(server.db, repo.NewRequest(
                device_id=device_id, local_id=f"{i:032x}", group_name="default", requester="x", summary="old",
                details="", urgency="normal", screenshot=None, diagnostics=[], attempt=None))
        pushed: list[list[wire.RequestView]] = []
        desk_.watch(Caller(uid=1000, user="ann"), pushed.append)
        local_id = await desk_.open(Caller(uid=1000, user="ann"), wire.Open(call=1, summary="printer"))
        await wait_until(lambda: desk_.book.entries[local_id].state == "failed", timeout=30,
                         what="the refused open marked failed")
        entry = desk_.book.entries[local_id]
        assert not entry.pending_open and "too_many" in entry.note, entry
        await wait_until(lambda: any(v.state == "failed" for views in pushed for v in views), timeout=5,
                         what="the window told")
        assert desk_.book.open_count(1000) == 0  # a failed request does not count against the user

        await server.db.execute("UPDATE support_requests SET state = 'resolved'")  # room on the server again
        made = 0
        for uid in (1000, 1001, 1002):
            for _ in range(8):
                try:
                    await desk_.open(Caller(uid=uid, user=f"u{uid}"), wire.Open(call=2, summary="s"))
                    made += 1
                except HelpRefused as refused:
                    assert "this computer" in str(refused)
        assert made == MAX_OPEN_PER_DEVICE
        await wait_until(lambda: sum(1 for e in desk_.book.entries.values() if e.state == "waiting")
                         == MAX_OPEN_PER_DEVICE, timeout=60, what="all accepted by the server")


async def test_diagnostics_are_collected_off_the_loop_and_reused(tmp_path: Path) -> None:
    """A check that blocks (here: reading a FIFO nobody writes, as a hung mount blocks statvfs) runs in a thread:
    the agent's loop keeps going, the window's state comes after DIAGNOSTICS_WAIT_S without it, and windows asking
    again share the one collection, then reuse its result."""
    from agent.help import desk as desk_module

    fifo = tmp_path / "route"
    os.mkfifo(fifo)
    calls: list[float] = []

    def route() -> bool | None:
        calls.append(time.monotonic())
        return diagnostics.has_default_route(fifo, tmp_path / "none")

    def unblock() -> None:  # whatever happens, the reader thread must end (the loop's executor waits for it)
        with contextlib.suppress(OSError):
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)

    async with desk(tmp_path) as (_server, agent, _sock), contextlib.AsyncExitStack() as stack:
        stack.callback(unblock)
        desk_ = agent.parts.help
        assert desk_ is not None
        desk_.probe = diagnostics.Probe(disks=lambda: [], memory=lambda: 10.0, default_route=route,
                                        reboot_flag=tmp_path / "no-reboot")
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        beat = asyncio.create_task(heartbeat())
        try:
            started = time.monotonic()
            states = await asyncio.gather(*(desk_.state(Caller(uid=1000, user="ann"), call) for call in (1, 2)))
            waited = time.monotonic() - started
        finally:
            beat.cancel()
        assert desk_module.DIAGNOSTICS_WAIT_S - 0.5 < waited < desk_module.DIAGNOSTICS_WAIT_S + 5
        assert ticks >= 20, ticks  # the loop ran while the check was blocked
        assert [s.diagnostics for s in states] == [[], []] and len(calls) == 1
        with open(fifo, "w") as writer:  # unblocks the reader thread at once
            writer.write("Iface\tDestination\nlo\t00000000\n")
        collecting = desk_._diagnosing
        assert collecting is not None
        await wait_until(collecting.done, timeout=10, what="the collection to finish")
        found = (await desk_.state(Caller(uid=1000, user="ann"), 3)).diagnostics
        assert [d.code for d in found] == ["no_network"] and len(calls) == 1  # the finished one, reused
        await desk_.state(Caller(uid=1000, user="ann"), 4)
        assert len(calls) == 1
