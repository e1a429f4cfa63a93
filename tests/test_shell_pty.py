"""The agent's remote shell against a real pty (no server): user, tty, Ctrl-C, resize, refusals, idle hang-up."""

from __future__ import annotations

import asyncio
import pwd
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from agent.policy import LocalPolicy
from agent.shell.session import Shell
from agent.toolkit.caps import decide_caps
from protocol import shell as sh
from protocol.authority import UnattendedGrant

USER = "nobody"


class Viewer:
    """Collects what the shell sends, as the console would."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.messages: list[sh.ShellAny] = []
        self.changed = asyncio.Event()

    async def text(self, data: str) -> None:
        self.messages.append(sh.decode_text(data))
        self.changed.set()

    async def binary(self, data: bytes) -> None:
        self.output += sh.unpack_data(data)
        self.changed.set()

    async def wait_for(self, check: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; output so far: {bytes(self.output)[-400:]!r} {self.messages}")
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass

    def of(self, kind: type) -> list[sh.ShellAny]:
        return [m for m in self.messages if isinstance(m, kind)]


def _sleeping(pid: int) -> bool:
    try:
        return any(p.name() == "sleep" for p in psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return False


async def wait_until_true(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _shell(viewer: Viewer, **kwargs: object) -> Shell:
    return Shell(viewer.text, viewer.binary, **{"allowed": True, "user": USER, **kwargs})  # type: ignore[arg-type]


async def _type(shell: Shell, text: str) -> None:
    await shell.on_binary(sh.pack_data(text.encode()))


async def test_shell_runs_as_the_user_on_a_pty_and_ctrl_c_stops_a_job() -> None:
    """`id -u` prints the target user's uid, `tty` names /dev/pts/N, \\x03 interrupts `sleep 100`, exit reports 3."""
    viewer = Viewer()
    shell = _shell(viewer)
    await shell.on_text(sh.Open(cols=100, rows=30))
    await viewer.wait_for(lambda: bool(viewer.of(sh.Opened)))
    opened = viewer.of(sh.Opened)[0]
    assert isinstance(opened, sh.Opened)
    uid = pwd.getpwnam(USER).pw_uid
    assert (opened.user, opened.uid, opened.root) == (USER, uid, False)
    assert opened.tty.startswith("/dev/pts/")
    await _type(shell, "echo U=$(id -u) T=$(tty) C=$(stty size)\r")
    await viewer.wait_for(lambda: f"U={uid} T={opened.tty} C=30 100".encode() in viewer.output)
    await shell.on_text(sh.Resize(cols=120, rows=40))
    await _type(shell, "echo S=$(stty size)\r")
    await viewer.wait_for(lambda: b"S=40 120" in viewer.output)
    started = time.monotonic()
    await _type(shell, "sleep 100; echo after=$?\r")
    await wait_until_true(lambda: _sleeping(opened.pid))
    await _type(shell, "\x03")
    await wait_until_true(lambda: not _sleeping(opened.pid))
    await _type(shell, "echo back\r")
    await viewer.wait_for(lambda: viewer.output.count(b"back\r\n") >= 2)
    assert time.monotonic() - started < 60 and b"after=0" not in viewer.output
    await _type(shell, "exit 3\r")
    await viewer.wait_for(lambda: bool(viewer.of(sh.Exit)))
    exit_ = viewer.of(sh.Exit)[0]
    assert isinstance(exit_, sh.Exit) and exit_.status == 3
    assert shell.pty is None


async def test_refusals_without_consent_and_root_against_policy() -> None:
    """No shell where consent/grant/policy left it out; no root shell unless allow_root_shell; one at a time."""
    viewer = Viewer()
    await _shell(viewer, allowed=False, refused="grant g1 does not name 'shell'").on_text(sh.Open())
    await _shell(viewer).on_text(sh.Open(root=True))
    errors = viewer.of(sh.Error)
    assert [(e.code, e.message) for e in errors if isinstance(e, sh.Error)] == [
        ("shell_refused", "grant g1 does not name 'shell'"), ("root_refused", "a root shell is off by this device's policy")]
    assert not viewer.of(sh.Opened)


async def test_root_shell_where_allowed_and_hang_up_on_close() -> None:
    """allow_root_shell: uid 0; closing the session hangs the shell up and reports it."""
    viewer = Viewer()
    shell = _shell(viewer, root_allowed=True)
    await shell.on_text(sh.Open(root=True))
    await viewer.wait_for(lambda: bool(viewer.of(sh.Opened)))
    opened = viewer.of(sh.Opened)[0]
    assert isinstance(opened, sh.Opened) and (opened.uid, opened.root) == (0, True)
    await shell.close("session ended")
    exit_ = viewer.of(sh.Exit)[0]
    assert isinstance(exit_, sh.Exit) and exit_.reason == "session ended" and exit_.status != 0


async def test_idle_shell_is_hung_up() -> None:
    """No byte either way for idle_timeout_s: the shell ends with reason 'idle timeout'."""
    viewer = Viewer()
    shell = _shell(viewer, idle_timeout_s=1.0)
    await shell.on_text(sh.Open())
    await viewer.wait_for(lambda: bool(viewer.of(sh.Exit)), 30)
    exit_ = viewer.of(sh.Exit)[0]
    assert isinstance(exit_, sh.Exit) and exit_.reason == "idle timeout"


async def test_big_output_arrives_whole_in_coalesced_messages() -> None:
    """`cat` of 2 MB: every byte arrives in order (the pty turns \\n into \\r\\n), in messages averaging well
    above the pty's 4 KiB per read (read_burst empties the pty before each send), none above MAX_DATA."""
    lines = [f"{i:07d} " + "abcdefghijklmnopqrstuvwxyz" * 2 for i in range(32_000)]  # 2 MB with line ends
    with tempfile.TemporaryDirectory(prefix="helpline-shell-") as folder:  # in /tmp: nobody may read it there
        Path(folder).chmod(0o755)
        big = Path(folder) / "big.txt"
        big.write_text("\n".join(lines) + "\n")
        big.chmod(0o644)
        await _cat_through_the_shell(big, lines)


async def _cat_through_the_shell(big: Path, lines: list[str]) -> None:
    sizes: list[int] = []
    viewer = Viewer()
    binary = viewer.binary

    async def counted(data: bytes) -> None:
        sizes.append(len(data) - 1)
        await binary(data)

    viewer.binary = counted  # type: ignore[method-assign]
    shell = _shell(viewer)
    await shell.on_text(sh.Open(cols=100, rows=30))
    await viewer.wait_for(lambda: bool(viewer.of(sh.Opened)))
    await _type(shell, "PS1='$ '; echo READY-$((1+1))\r")
    await viewer.wait_for(lambda: b"READY-2" in viewer.output)
    start, first = len(viewer.output), len(sizes)
    await _type(shell, f"cat {big}; echo END-$((40+2))\r")
    await viewer.wait_for(lambda: b"END-42\r\n" in viewer.output[start:], 120)
    out = bytes(viewer.output[start:])
    expected = ("\r\n".join(lines) + "\r\n").encode()
    assert expected in out
    during = sizes[first:]
    assert max(during) <= sh.MAX_DATA
    assert len(out) / len(during) > 8192, (len(out), len(during))  # one 4 KiB read per message would be 4096
    await shell.close()


def test_codec_rejects_garbage() -> None:
    """Only ShellProtocolError from peer input; shell data keeps its own magic byte."""
    for bad in ("{", '{"type":"shell.open","cols":0}', '{"type":"shell.open","x":1}', "x" * 5000):
        with pytest.raises(sh.ShellProtocolError):
            sh.decode_text(bad)
    with pytest.raises(sh.ShellProtocolError):
        sh.unpack_data(b"\xc1")
    assert sh.unpack_data(sh.pack_data(b"\x03")) == b"\x03" and not sh.is_data(b"\xb1x")


def _grant(*actions: str) -> UnattendedGrant:
    return UnattendedGrant(grant_id="g-shell-1", groups=["lab"], technician_names=["tess"],
                           actions=list(actions),  # type: ignore[arg-type]
                           not_before=1_000.0, not_after=2_000.0, issuer="approver", issued_at=1_000.0)


def test_consent_grant_and_policy_decide_the_shell() -> None:
    """Off by default; on by policy for attended sessions; unattended only with a grant naming shell; root only with
    allow_root_shell on top."""
    assert "shell" not in decide_caps(LocalPolicy(), None).allowed
    assert "policy" in decide_caps(LocalPolicy(), None).refused["shell"]
    on = LocalPolicy.parse("allow_shell = true\n")
    assert "shell" in decide_caps(on, None).allowed and not decide_caps(on, None).root_shell
    refused = decide_caps(on, _grant("view", "control"))
    assert "shell" not in refused.allowed and "g-shell-1" in refused.refused["shell"]
    assert "shell" in decide_caps(on, _grant("control", "shell")).allowed
    root = LocalPolicy.parse("allow_shell = true\nallow_root_shell = true\n")
    assert decide_caps(root, _grant("control", "shell")).root_shell
    assert not decide_caps(LocalPolicy.parse("allow_root_shell = true\n"), None).root_shell
