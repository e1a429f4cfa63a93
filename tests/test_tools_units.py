"""Processes and services tools (issue 16) without a server: parsers on systemd's formats, the "not available"
answer where systemd is not PID 1, ending processes (TERM, KILL after the grace, refusals), message limits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import msgspec
import psutil
import pytest

from agent.policy import LocalPolicy
from agent.tools import services
from agent.tools.feature import ToolsFeature
from agent.tools.processes import EndRefused, ProcessTable, end_process
from protocol import codec
from protocol.authority import UnattendedGrant
from protocol.errors import InvalidMessage
from protocol.tools import JournalRequest, ProcessEndRequest, ProcessListRequest, ServiceActionRequest, ToolResult

if TYPE_CHECKING:
    from agent.control_client import AgentClient
    from agent.sessions import AgentSessions

FIXTURES = Path(__file__).parent / "fixtures"


def test_units_json_parsed() -> None:
    """Every unit of `systemctl list-units --output=json` with its load/active/sub state and description."""
    units, truncated = services.parse_units_json((FIXTURES / "systemctl-list-units.json").read_text())
    assert not truncated
    assert [u.unit for u in units] == ["cron.service", "dbus.service", "nginx.service",
                                       "systemd-fsck@dev-disk-by\\x2duuid-1234.service", "plymouth-start.service"]
    nginx = units[2]
    assert (nginx.load, nginx.active, nginx.sub) == ("loaded", "failed", "failed")
    assert nginx.description.startswith("A high performance web server")
    assert units[4].load == "not-found"


def test_units_plain_parsed_with_failed_marker() -> None:
    """The --plain --no-legend table (older systemd) gives the same fields; the ● of a failed unit is not its name."""
    units, _ = services.parse_units_plain((FIXTURES / "systemctl-list-units-plain.txt").read_text())
    assert [u.unit for u in units] == ["cron.service", "dbus.service", "nginx.service", "plymouth-start.service"]
    assert (units[2].active, units[2].sub) == ("failed", "failed")
    assert units[1].description == "D-Bus System Message Bus"


def test_units_output_that_is_not_a_list_is_unavailable() -> None:
    with pytest.raises(services.Unavailable):
        services.parse_units_json('{"unit": "x.service"}')
    with pytest.raises(services.Unavailable):
        services.parse_units_json("Failed to connect to bus")


def test_journal_json_parsed() -> None:
    """Time (µs → s), priority and message per line; a byte-array message is decoded with replacement."""
    lines = services.parse_journal_json((FIXTURES / "journalctl-nginx.json").read_text() + "not json\n")
    assert len(lines) == 4
    assert lines[0].ts == pytest.approx(1732780800.123456)
    assert lines[1].priority == 3 and "Address already in use" in lines[1].message
    assert lines[2].message == "nginx: \ufffdbad"
    assert lines[3].message == "nginx.service: Failed with result 'exit-code'."


def test_no_systemd_is_named_not_available(tmp_path: Path) -> None:
    """Where /run/systemd/system is absent the answer names PID 1 and no command runs."""
    ran: list[list[str]] = []

    def runner(argv: list[str]) -> str:
        ran.append(argv)
        return ""

    svc = services.Services(problem=lambda: services.systemd_problem(tmp_path / "absent"), runner=runner)
    init = psutil.Process(1).name()
    for call in (svc.units, lambda: svc.act("cron.service", "restart"), lambda: svc.journal("cron.service", 5)):
        with pytest.raises(services.Unavailable, match=rf"not available: systemd is not running \(PID 1 is {init}\)"):
            call()
    assert ran == []


def test_live_path_runs_systemctl_with_the_unit_after_double_dash(tmp_path: Path) -> None:
    """With systemd present, the commands are systemctl/journalctl argv lists, the unit after ``--`` or ``-u``."""
    (tmp_path / "system").mkdir()
    ran: list[list[str]] = []

    def runner(argv: list[str]) -> str:
        ran.append(argv)
        return (FIXTURES / "systemctl-list-units.json").read_text() if argv[1] == "list-units" else ""

    svc = services.Services(problem=lambda: services.systemd_problem(tmp_path / "system"), runner=runner)
    assert len(svc.units()[0]) == 5
    assert svc.act("nginx.service", "restart") == "restarted"
    assert svc.journal("nginx.service", 20) == []
    assert ran[1] == ["systemctl", "restart", "--no-ask-password", "--", "nginx.service"]
    assert ran[2][-2:] == ["-u", "nginx.service"] and "20" in ran[2]


def test_unit_names_that_look_like_options_are_refused() -> None:
    """A unit starting with '-' never reaches systemctl: the protocol refuses it on decode."""
    for unit in ("-H", "--host=evil", "a b.service", "x/../y"):
        raw = msgspec.json.encode({"v": 1, "type": "tools.service.action", "id": "r1", "technician": "t",
                                   "technician_user": "t", "unit": unit, "action": "stop"})
        with pytest.raises(InvalidMessage):
            codec.decode(raw)
    ok = codec.decode(msgspec.json.encode({"v": 1, "type": "tools.service.action", "id": "r1", "technician": "t",
                                           "technician_user": "t", "unit": "nginx.service", "action": "stop"}))
    assert isinstance(ok, ServiceActionRequest)


def test_limits_on_journal_and_grace() -> None:
    for bad in ({"lines": 501}, {"lines": 0}):
        raw = msgspec.json.encode({"v": 1, "type": "tools.service.journal", "id": "r1", "technician": "t",
                                   "technician_user": "t", "unit": "cron.service", **bad})
        with pytest.raises(InvalidMessage):
            codec.decode(raw)
    raw = msgspec.json.encode({"v": 1, "type": "tools.process.end", "id": "r1", "technician": "t",
                               "technician_user": "t", "pid": 5, "grace_s": 31})
    with pytest.raises(InvalidMessage):
        codec.decode(raw)
    assert isinstance(codec.decode(msgspec.json.encode({"v": 1, "type": "tools.service.journal", "id": "r1",
                                                        "technician": "t", "technician_user": "t",
                                                        "unit": "cron.service"})), JournalRequest)


def _start(code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_end_process_terms_then_kills_after_the_grace() -> None:
    """A process that ignores SIGTERM is killed after the grace; a polite one ends by SIGTERM."""
    stubborn = _start("import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True);"
                      " time.sleep(120)")
    polite = _start("import time; print('ready', flush=True); time.sleep(120)")
    try:
        started = time.monotonic()
        assert end_process(stubborn.pid, psutil.Process(stubborn.pid).create_time(), 0.5) == \
            "killed by SIGKILL after 0.5 s"
        assert time.monotonic() - started >= 0.5
        stubborn.wait(10)  # end_process reaped it already (psutil waits on its own children)
        assert not psutil.pid_exists(stubborn.pid)
        assert end_process(polite.pid, None, 5.0) == "ended by SIGTERM"
        polite.wait(10)
        assert not psutil.pid_exists(polite.pid)
    finally:
        for proc in (stubborn, polite):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_end_process_refusals() -> None:
    """PID 1 and the agent itself are never ended; a reused pid (other start time) and a gone pid are not found."""
    for pid in (1, os.getpid()):
        with pytest.raises(EndRefused) as refused:
            end_process(pid, None, 1.0)
        assert refused.value.code == "denied"
    proc = _start("import time; print('ready', flush=True); time.sleep(120)")
    try:
        with pytest.raises(EndRefused, match="reused") as refused:
            end_process(proc.pid, psutil.Process(proc.pid).create_time() - 100, 1.0)
        assert refused.value.code == "not_found" and proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(EndRefused) as refused:
        end_process(proc.pid, None, 1.0)
    assert refused.value.code == "not_found"


def test_process_table_lists_and_measures_cpu() -> None:
    """A busy process started here is listed with its command line and, on the second listing, its CPU share."""
    busy = _start("import time; print('ready', flush=True)\nend = time.time() + 60\nwhile time.time() < end: pass")
    try:
        table = ProcessTable()
        first, _ = table.snapshot()
        mine = [p for p in first if p.pid == busy.pid]
        assert mine and "while time.time()" in mine[0].cmdline and mine[0].cmdline.startswith(sys.executable)
        deadline = time.monotonic() + 10
        cpu = 0.0
        while cpu <= 5.0 and time.monotonic() < deadline:
            time.sleep(0.3)  # measuring CPU needs elapsed time between two listings, not synchronization
            listed, _ = table.snapshot()
            cpu = next(p.cpu_percent for p in listed if p.pid == busy.pid)
        assert cpu > 5.0
    finally:
        busy.kill()
        busy.wait()


def test_result_size_stays_under_the_channel_cap() -> None:
    """The largest answer allowed (2000 processes with 512-character command lines) fits in one control message."""
    from protocol.limits import MAX_CONTROL_MESSAGE_BYTES
    from protocol.tools import MAX_CMDLINE, MAX_PROCESSES, ProcessInfo

    info = ProcessInfo(pid=2**31 - 1, ppid=1, name="n" * 256, user="u" * 256, cpu_percent=100.0,
                       memory_rss=2**40, memory_percent=99.9, status="s" * 256, started_at=1.7e9,
                       cmdline="c" * MAX_CMDLINE)
    raw = codec.encode(ToolResult(in_reply_to="x", processes=[info] * MAX_PROCESSES))
    assert len(raw) < MAX_CONTROL_MESSAGE_BYTES
    assert isinstance(codec.decode(raw), ToolResult)
    assert ProcessEndRequest.__struct_config__.tag == "tools.process.end"


class _Client:
    """Captures what the feature answers (the control channel's send)."""

    def __init__(self) -> None:
        self.sent: list[ToolResult] = []

    async def send(self, message: ToolResult) -> None:
        self.sent.append(message)


def _feature(policy: LocalPolicy, running: dict[str, Any]) -> ToolsFeature:
    sessions = SimpleNamespace(policy=lambda: policy, running=running, authority=None)
    return ToolsFeature(cast("AgentClient", _Client()), cast("AgentSessions", sessions))


def _running(mode: str, user: str = "tess", actions: list[str] | None = None, controlling: str | None = None) -> Any:
    grant = None if actions is None else UnattendedGrant(
        grant_id="g1", devices=["d"], technician_names=["tess"], actions=actions, not_before=0, not_after=2e9,  # type: ignore[arg-type]
        issuer="alice", issued_at=0)
    return SimpleNamespace(offer=SimpleNamespace(technician_user=user), mode=mode, grant=grant, end_reason="",
                           controlling=controlling or user)


def test_device_authority_rule() -> None:
    """Changes need a running control session of the asking technician; under a grant, also the named action."""
    feature = _feature(LocalPolicy(), {"att": _running("control"), "view": _running("view"),
                                       "g": _running("control", actions=["control", "processes"])})
    assert feature.authority("att", "tess", "processes") == ""
    assert feature.authority("att", "tess", "services") == ""  # attended: the user consented to control
    assert "another technician" in feature.authority("att", "tom", "processes")
    assert "view only" in feature.authority("view", "tess", "processes")
    assert "not running" in feature.authority("gone", "tess", "processes")
    assert "session" in feature.authority(None, "tess", "processes")
    assert feature.authority("g", "tess", "processes") == ""
    assert "'services'" in feature.authority("g", "tess", "services")


def test_device_authority_follows_a_hand_off() -> None:
    """After tess handed control to tom, tom's changes pass and tess's (now a viewer) are refused."""
    feature = _feature(LocalPolicy(), {"att": _running("control", controlling="tom")})
    assert feature.authority("att", "tom", "processes") == ""
    assert "another technician" in feature.authority("att", "tess", "processes")


async def test_policy_switch_refuses_everything() -> None:
    """allow_tools = false in the device's policy: listing and ending are refused with code 'policy'."""
    assert LocalPolicy.parse("allow_tools = false\n").allow_tools is False
    assert LocalPolicy().allow_tools is True
    feature = _feature(LocalPolicy(allow_tools=False), {"att": _running("control")})
    client = cast("_Client", feature.client)
    await feature.on_processes(feature.client, ProcessListRequest(technician="t", technician_user="tess"))
    await feature.on_end(feature.client, ProcessEndRequest(technician="t", technician_user="tess", session_id="att",
                                                           pid=os.getpid()))
    assert [r.error for r in client.sent] == ["policy", "policy"]
