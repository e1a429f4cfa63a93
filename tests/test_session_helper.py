"""The root service and per-user session helpers, end to end (issue 21).

Real parts throughout: two local Unix users created for the test (removed at the end), each
with a session helper (``helpline agent session-helper``, a real process run as that user) on
its own Xvfb; the agent service in this root process with ``desktop = "helper"``; a real server
over mTLS; logind replaced by a stand-in on a private dbus-daemon (tests/logind_standin.py),
since logind cannot run without systemd as PID 1. The Tk prompt is clicked like a user would.

Root's interpreter lives under /root (0700), so the helpers run the system's python of the same
version with this checkout and the virtualenv's packages on PYTHONPATH, the checkout bound into
the helper's own mount namespace where the user can reach it (:func:`helper_process`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from agent.config import AgentConfig
from agent.consent.tk_app import ALLOW_BG, CHAT_TITLE, DENY_BG, PROMPT_TITLE
from agent.desktop.broker import DesktopBroker
from agent.desktop.tracker import LogindTracker
from protocol import toolkit as tk
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.logind_standin import FakeSession, LogindStandIn, private_bus, user_env
from tests.test_session_helpers import (
    api,
    click_colour,
    install_test_auth,
    paint_root,
    viewer_for,
    wait_window,
    xdotool,
)
from tests.xvfb import XvfbHandle, start_xvfb

#: Run alone, after the parallel pass (scripts/test): creates local users (useradd) and counts every prompt process on the box.
pytestmark = pytest.mark.serial

REPO = Path(__file__).resolve().parent.parent
USER_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
COLOUR_A, COLOUR_B = "#2050d0", "#d07020"


@dataclass(frozen=True)
class LocalUser:
    name: str
    uid: int
    gid: int
    home: Path


@dataclass
class Desk:
    """Two users, an Xvfb each, the logind stand-in, a directory the helpers can reach."""

    a: LocalUser
    b: LocalUser
    xa: XvfbHandle
    xb: XvfbHandle
    logind: LogindStandIn
    bus: str
    socket_dir: Path

    @property
    def socket(self) -> Path:
        return self.socket_dir / "desktop.sock"

    def sessions(self, *, active: str = "c1", locked: str = "") -> None:
        """c1 = user a on xa, c2 = user b on xb, both on seat0 (fast user switching)."""
        self.logind.set_sessions(
            FakeSession("c1", self.a.uid, self.a.name, self.xa.display, active=active == "c1", locked=locked == "c1"),
            FakeSession("c2", self.b.uid, self.b.name, self.xb.display, active=active == "c2", locked=locked == "c2"))


@contextlib.contextmanager
def local_user(tag: str) -> Iterator[LocalUser]:
    name = f"hl{secrets.token_hex(3)}{tag}"
    subprocess.run(["useradd", "--create-home", "--shell", "/usr/sbin/nologin", "--user-group", name], check=True,
                   capture_output=True, timeout=30)
    try:
        entry = pwd.getpwnam(name)
        yield LocalUser(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))
    finally:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def desk() -> Iterator[Desk]:
    for tool in ("useradd", "userdel", "dbus-daemon", "unshare", "setpriv"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (scripts/setup.sh installs it)")
    if os.getuid() != 0:
        pytest.fail("these tests create users and run the service as root")
    if not USER_PYTHON.exists():
        pytest.fail(f"{USER_PYTHON} is missing: the helpers need a python the test users may run")
    with contextlib.ExitStack() as stack:
        a, b = stack.enter_context(local_user("a")), stack.enter_context(local_user("b"))
        xa = start_xvfb(800, 600)
        stack.callback(xa.stop)
        xb = start_xvfb(640, 480)
        stack.callback(xb.stop)
        scratch = Path(tempfile.mkdtemp(prefix="helpline-desk-"))
        stack.callback(shutil.rmtree, scratch, True)
        os.chmod(scratch, 0o755)  # the helpers (other users) must reach the socket below it
        bus = stack.enter_context(private_bus(scratch / "dbus"))
        logind = LogindStandIn(bus).start()
        stack.callback(logind.stop)
        paint_root(xa.display, COLOUR_A)
        paint_root(xb.display, COLOUR_B)
        yield Desk(a, b, xa, xb, logind, bus, scratch / "run")


@contextlib.contextmanager
def helper_process(user: LocalUser, session_id: str, display: str, socket: Path, log: Path,
                   extra_env: dict[str, str] | None = None, module: list[str] | None = None
                   ) -> Iterator[subprocess.Popen[bytes]]:
    """``helpline agent session-helper`` (or ``python -m`` ``module``: a test's stand-in) as ``user``; terminated by PID.

    The checkout may sit where other users cannot reach it (a clone under /root), so the helper
    gets its own mount namespace with the checkout bound read-only at a world-reachable mount
    point, then drops to the user (setpriv) and execs: one process, one PID, the user's uid.
    """
    checkout = socket.parent.parent / "checkout"
    checkout.mkdir(mode=0o755, exist_ok=True)
    site = Path(sysconfig.get_paths()["purelib"])
    path = os.pathsep.join([str(checkout), str(checkout / site.relative_to(REPO)) if site.is_relative_to(REPO)
                            else str(site)])
    env = user_env(str(user.home), user.name, {"DISPLAY": display, "PYTHONPATH": path, **(extra_env or {})})
    if session_id:
        env["XDG_SESSION_ID"] = session_id
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount --bind -o ro "$1" "$2" && shift 2 && exec "$@"', "sh", str(REPO), str(checkout),
               "setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--",
               str(USER_PYTHON), "-m", *(module or ["helpline", "agent", "session-helper", "--config", "/nonexistent",
                                                    "--socket", str(socket), "--display", display])]
    with log.open("ab") as out:
        proc = subprocess.Popen(command, env=env, cwd=user.home, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def prompt_uids() -> set[int]:
    """Real uids of the Tk consent-prompt processes running now."""
    found = set()
    for proc in psutil.process_iter(["cmdline", "uids"]):
        cmdline = proc.info["cmdline"] or []
        if "agent.consent.tk_app" in cmdline and "prompt" in cmdline:
            found.add(proc.info["uids"].real)
    return found


def agent_config(tmp_path: Path, desk: Desk) -> AgentConfig:
    policy = tmp_path / "policy.toml"
    policy.write_text("prompt_timeout_s = 30\ndecline_cooldown_s = 0\n")
    return AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0, policy_file=policy, desktop="helper",
                       desktop_socket=desk.socket, logind_bus=desk.bus)


async def request(server, device_id: str, mode: str) -> str:  # type: ignore[no-untyped-def]
    status, body = await api(server, "POST", f"/api/v1/devices/{device_id}/sessions", "ann",
                             {"mode": mode, "reason": "printer setup"})
    assert status == 201, body
    return str(body["session_id"])


async def session_body(server, sid: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """The session as the server has it, once it has ended."""
    found: dict = {}  # type: ignore[type-arg]

    async def ended() -> bool:
        _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
        found.update(body)
        return body.get("state") == "ended" and body.get("end_reason") is not None

    await wait_until(ended, timeout=30, what=f"session {sid} ended on the server")
    return found


@contextlib.asynccontextmanager
async def root_service(tmp_path: Path, desk: Desk) -> AsyncIterator[tuple]:  # type: ignore[type-arg]
    """Server and the root agent service (desktop = "helper"), listening for helpers and connected:
    (server, state, agent, broker)."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        async with running_agent(state, agent_config(tmp_path, desk)) as agent:
            broker = agent.parts.desktop
            assert broker is not None
            await asyncio.wait_for(broker.listening.wait(), 30)
            await asyncio.wait_for(agent.client.ready.wait(), 30)
            yield server, state, agent, broker


@contextlib.asynccontextmanager
async def service_with_helpers(tmp_path: Path, desk: Desk) -> AsyncIterator[tuple]:  # type: ignore[type-arg]
    """Server, the root agent service (desktop = "helper"), and a helper per user connected to it."""
    async with root_service(tmp_path, desk) as (server, state, agent, broker):
        with helper_process(desk.a, "c1", desk.xa.display, desk.socket, tmp_path / "helper-a.log") as ha, \
                helper_process(desk.b, "c2", desk.xb.display, desk.socket, tmp_path / "helper-b.log") as hb:
            await wait_until(lambda: set(broker.helpers) == {"c1", "c2"}, timeout=60,
                             what="both session helpers accepted")
            yield server, state, agent, broker, ha, hb


async def test_prompt_screen_and_file_drop_run_as_the_active_user_and_follow_a_switch(
        tmp_path: Path, desk: Desk) -> None:
    """The active user's helper shows the prompt (its uid), streams its own display, saves a dropped file as that
    user; after switching to the other user, the next prompt is theirs and the first user is not asked."""
    desk.sessions(active="c1")
    async with service_with_helpers(tmp_path, desk) as (server, state, agent, broker, ha, _hb):
        assert broker.helpers["c1"].peer.uid == desk.a.uid and broker.helpers["c1"].peer.pid == ha.pid
        sid = await request(server, state.device_id, "control")
        async with viewer_for(server, sid) as viewer:
            await wait_window(desk.xa.display, PROMPT_TITLE, timeout=30)
            assert prompt_uids() == {desk.a.uid}
            await wait_window(desk.xb.display, PROMPT_TITLE, present=False, timeout=1)
            await click_colour(desk.xa.display, ALLOW_BG, timeout=20)
            await viewer.wait_for_updates(1, 30)
            # The screen is a's display (800x600, a's colour), captured by a's helper.
            assert viewer.selected is not None
            monitor = viewer.monitors[viewer.selected]
            assert (monitor.w, monitor.h) == (800, 600)
            await viewer.wait_for(lambda v: all(abs(int(c) - want) <= 24 for c, want in
                                                zip(v.region(700, 550, 1, 1)[0, 0][:3], (0xD0, 0x50, 0x20))), 30)  # BGR
            bound = broker._bound[sid]
            assert bound.peer.uid == desk.a.uid and bound.peer.pid == ha.pid
            # Control: the technician's pointer moves on a's display, injected by a's helper.
            await viewer.send_mouse(123, 77)
            await wait_until(lambda: xdotool(desk.xa.display, "getmouselocation").startswith("x:123 y:77 "),
                             timeout=20, what="the pointer moved on a's display")
            landed = Path(await broker.drop_file("../../etc/cron.d/notes.txt", b"from the technician\n",
                                                 remote_session=sid))
            assert landed == desk.a.home / "Downloads" / "notes.txt"
            assert landed.stat().st_uid == desk.a.uid and landed.read_bytes() == b"from the technician\n"
            # The in-session toolkit runs in a's helper too: a file sent through the tunnel belongs to a.
            sent = tmp_path / "setup.txt"
            sent.write_bytes(b"installer\n" * 1000)
            done = await viewer.send_file(str(sent), timeout=60)
            assert isinstance(done, tk.FileDone), done
            copy = desk.a.home / "Downloads" / done.name
            assert copy.stat().st_uid == desk.a.uid and copy.read_bytes() == sent.read_bytes()
            # The chat goes to a's indicator (in a's helper): the technician's line opens its chat window there.
            await viewer.say("hello from the technician")
            await wait_window(desk.xa.display, CHAT_TITLE, timeout=30)
            await viewer.wait_for(lambda v: bool(v.chat) and v.chat[0].sender == "technician", 20)
        await wait_until(lambda: not agent.sessions.running, timeout=30, what="first session ended")
        assert agent.sessions.tunnel_bytes.get(sid, 0) > 0

        desk.logind.activate("c2")  # fast user switching: b is in front now
        sid2 = await request(server, state.device_id, "view")
        async with viewer_for(server, sid2) as viewer:
            await wait_window(desk.xb.display, PROMPT_TITLE, timeout=30)
            assert prompt_uids() == {desk.b.uid}
            await wait_window(desk.xa.display, PROMPT_TITLE, present=False, timeout=1)
            await click_colour(desk.xb.display, DENY_BG, timeout=20)
            await asyncio.wait_for(viewer.closed.wait(), 30)
        body = await session_body(server, sid2)
        assert body["answered_by"] == "user" and body["state"] == "ended" and body["bytes_to_technician"] == 0


async def test_a_locked_or_inactive_session_is_never_prompted(tmp_path: Path, desk: Desk) -> None:
    """The active session is locked: no prompt anywhere, the technician is told nobody can be asked and why;
    with no active graphical session (the login screen in front) likewise."""
    desk.sessions(active="c1", locked="c1")
    async with service_with_helpers(tmp_path, desk) as (server, state, agent, _broker, _ha, _hb):
        sid = await request(server, state.device_id, "view")
        await wait_until(lambda: sid in agent.sessions.finished, timeout=30, what="the locked request answered")
        body = await session_body(server, sid)
        assert body["answered_by"] == "unavailable", body
        assert "locked" in body["end_reason"] and desk.a.name in body["end_reason"]
        assert prompt_uids() == set()

        desk.logind.set_sessions(
            FakeSession("c1", desk.a.uid, desk.a.name, desk.xa.display),
            FakeSession("c2", desk.b.uid, desk.b.name, desk.xb.display))
        sid2 = await request(server, state.device_id, "view")
        await wait_until(lambda: sid2 in agent.sessions.finished, timeout=30, what="the second request answered")
        body = await session_body(server, sid2)
        assert body["answered_by"] == "unavailable" and "no graphical session is active" in body["end_reason"]
        assert prompt_uids() == set()
        for display in (desk.xa.display, desk.xb.display):
            await wait_window(display, PROMPT_TITLE, present=False, timeout=1)


async def test_a_helper_claiming_another_users_session_is_refused(tmp_path: Path, desk: Desk) -> None:
    """User b's helper saying it runs in user a's session is refused (SO_PEERCRED uid ≠ the session's), exits 2,
    and the refusal is recorded; a's own helper is accepted."""
    desk.sessions(active="c1")
    broker = DesktopBroker(LogindTracker(desk.bus), desk.socket)
    serving = asyncio.create_task(broker.serve())
    try:
        await asyncio.wait_for(broker.listening.wait(), 30)
        with helper_process(desk.b, "c1", desk.xa.display, desk.socket, tmp_path / "impostor.log") as impostor:
            code = await asyncio.to_thread(impostor.wait, 60)
        assert code == 2
        out = (tmp_path / "impostor.log").read_text()
        assert f"belongs to uid {desk.a.uid}, not to the connecting uid {desk.b.uid}" in out
        assert any(f"uid {desk.b.uid} pid {impostor.pid}" in r for r in broker.refusals)
        assert "c1" not in broker.helpers
        # a's own helper, started like a systemd user unit (no XDG_SESSION_ID): it finds its session in logind.
        with helper_process(desk.a, "", desk.xa.display, desk.socket, tmp_path / "helper-a.log",
                            extra_env={"HELPLINE_LOGIND_BUS": desk.bus}) as own:
            await wait_until(lambda: "c1" in broker.helpers, timeout=60, what="a's own helper accepted")
            assert broker.helpers["c1"].peer.pid == own.pid
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
