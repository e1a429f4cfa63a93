"""The services tool against a live systemd (issue 16): a real user manager, real systemctl and journalctl.

systemd is not PID 1 on these machines, but systemd 252 runs fine as a **user manager** (``systemd --user``)
in a private mount namespace: a tmpfs on ``/run`` carries the sd_booted(3) marker ``/run/systemd/system``
(the manager refuses to start without it), ``/var/log/journal`` is hidden under a tmpfs, and a
``systemd-journald`` in the same namespace collects the units' output. The manager is first put in a cgroup
of its own, shaped like a real one (``…/user@0.service``) so that journald attributes output to user units:
a manager at a hierarchy's root moves *every* process of that root into ``init.scope`` (it did, once, while
this was being worked out). The agent's own :class:`agent.tools.services.Services` runs its exact argv
through ``nsenter`` into that namespace with ``systemctl --user`` and ``journalctl --user-unit`` for ``-u``
— the only difference from a device, where the same commands talk to PID 1. Processes are ended by PID and the cgroups removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.consent.scripted import ScriptedConsentUI
from agent.tools import services
from agent.tools.feature import ToolsFeature
from protocol.tools import ServiceInfo, ServiceListRequest
from tests.harness import wait_until
from tests.test_session_access import technician_with_device
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

#: Run alone, after the parallel pass (scripts/test): moves processes between the machine's cgroups.
pytestmark = pytest.mark.serial

#: Hierarchies the manager writes to (cpuset needs cpus/mems set first and is left alone).
HIERARCHIES = ("systemd", "unified", "cpu", "memory", "pids")
CGROUP_ROOT = Path("/sys/fs/cgroup")

SCRIPT = r"""
set -e
cg="$1"
for h in $2; do
  mkdir -p "/sys/fs/cgroup/$h/$cg"
  echo $$ > "/sys/fs/cgroup/$h/$cg/cgroup.procs"
done
mount -t tmpfs tmpfs /run
mkdir -p /var/log/journal  # systemd's postinst makes it; a machine without it still runs the test
mount -t tmpfs tmpfs /var/log/journal
mkdir -p /run/systemd/system /run/systemd/journal /run/user/0/systemd/user
chmod 700 /run/user/0
printf '[Unit]\nDescription=Helpline test target\n' > /run/user/0/systemd/user/helpline-test.target
printf '[Unit]\nDescription=Helpline live probe\n[Service]\nExecStart=/bin/sh -c "echo probe started $$$$; exec sleep 1000"\n' \
  > /run/user/0/systemd/user/helpline-probe.service
export XDG_RUNTIME_DIR=/run/user/0
exec /lib/systemd/systemd --user --unit=helpline-test.target
"""


def _wait(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture
def user_manager(tmp_path: Path) -> Iterator[int]:
    """A systemd user manager with a journald beside it, in a private mount namespace; yields the manager's PID."""
    if os.geteuid() != 0:
        pytest.fail("the live systemd test needs root (a mount namespace and cgroups)")
    script = tmp_path / "manager.sh"
    script.write_text(SCRIPT)
    cgroup = f"helpline-{os.getpid()}.slice/user@0.service"
    manager = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", str(script), cgroup,
                                " ".join(HIERARCHIES)], stdin=subprocess.DEVNULL, start_new_session=True)
    journald: subprocess.Popen[bytes] | None = None
    root = Path(f"/proc/{manager.pid}/root")
    try:
        _wait(lambda: manager.poll() is not None or (root / "run/user/0/systemd/private").exists(),
              "the user manager's private socket")
        assert manager.poll() is None, f"systemd --user exited with {manager.returncode}"
        journald = subprocess.Popen(["nsenter", "-t", str(manager.pid), "--mount", "--",
                                     "/lib/systemd/systemd-journald"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: journald.poll() is not None or (root / "run/systemd/journal/stdout").exists(),
              "journald's stdout socket")
        assert journald.poll() is None, f"systemd-journald exited with {journald.returncode}"
        yield manager.pid
    finally:
        _stop(manager)
        if journald is not None:
            _stop(journald)
        for hierarchy in HIERARCHIES:
            top = CGROUP_ROOT / hierarchy / cgroup.split("/")[0]
            for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
        for hierarchy in HIERARCHIES:  # a manager that escaped its cgroup would have left this behind
            assert not (CGROUP_ROOT / hierarchy / "init.scope").exists(), hierarchy


def _live(pid: int) -> services.Services:
    """The agent's Services, its commands run in the manager's namespace: ``systemctl --user …``, and
    ``journalctl … --user-unit UNIT`` for ``-u UNIT`` (root's output is in the system journal, which
    ``journalctl --user`` does not open)."""
    prefix = ["nsenter", "-t", str(pid), "--mount", "--", "env", "XDG_RUNTIME_DIR=/run/user/0"]

    def runner(argv: list[str]) -> str:
        if argv[0] == "journalctl":
            return services.run([*prefix, "journalctl", *("--user-unit" if a == "-u" else a for a in argv[1:])])
        return services.run([*prefix, argv[0], "--user", *argv[1:]])

    return services.Services(
        problem=lambda: services.systemd_problem(Path(f"/proc/{pid}/root/run/systemd/system")), runner=runner)


def _probe(svc: services.Services) -> ServiceInfo:
    units, truncated = svc.units()
    assert not truncated
    [probe] = [u for u in units if u.unit == "helpline-probe.service"]
    return probe


def test_live_systemd_lists_starts_restarts_stops_and_reads_the_journal(user_manager: int) -> None:
    """systemctl 252's real JSON parses; start/restart/stop change the unit's real state (a restart is a new
    process); journalctl's real JSON gives the unit's own lines, newest last."""
    svc = _live(user_manager)
    units, _ = svc.units()  # list-units shows the units in memory: the probe is not, until it is started
    assert "helpline-probe.service" not in {u.unit for u in units}
    assert svc.act("helpline-probe.service", "start") == "started"
    probe = _probe(svc)
    assert (probe.load, probe.active, probe.sub, probe.description) == ("loaded", "active", "running",
                                                                        "Helpline live probe")

    def started_lines() -> list[str]:
        return [line.message for line in svc.journal("helpline-probe.service", 50)
                if line.message.startswith("probe started")]

    _wait(lambda: len(started_lines()) == 1, "the first start's line in the journal")
    assert svc.act("helpline-probe.service", "restart") == "restarted"
    _wait(lambda: len(started_lines()) == 2, "the restart's line in the journal")
    first, second = started_lines()
    assert first != second  # each names its own PID: the restart ran a new process
    lines = svc.journal("helpline-probe.service", 50)
    assert all(line.priority == 6 for line in lines if line.message.startswith("probe started"))
    assert [line.ts for line in lines] == sorted(line.ts for line in lines)
    assert svc.act("helpline-probe.service", "stop") == "stopped"
    units, _ = svc.units()  # stopped and unreferenced: systemd unloads it, or lists it inactive until then
    assert all((u.active, u.sub) == ("inactive", "dead") for u in units if u.unit == "helpline-probe.service")
    assert not [line for line in svc.journal("helpline-probe.service", 50) if "probe started" in line.message][2:]
    with pytest.raises(services.Unavailable, match=r"Unit helpline-no-such\.service not found"):
        svc.act("helpline-no-such.service", "start")


async def test_live_systemd_through_the_server(user_manager: int, tmp_path: Path,
                                               xvfb: XvfbHandle) -> None:  # noqa: F811
    """The same live manager behind a real server and agent: the technician starts the unit in a control
    session, sees it running in the list and its line in the journal, stops it; both actions audited."""
    async with technician_with_device(tmp_path, xvfb.display, ScriptedConsentUI([True])) as setup:
        feature = setup.agent.client.handlers[ServiceListRequest].__self__  # type: ignore[attr-defined]
        assert isinstance(feature, ToolsFeature)
        feature.services = _live(user_manager)  # the agent's own Services, in the manager's namespace
        base = f"/api/v1/devices/{setup.device_id}/services"
        control = await setup.request("control")
        async with setup.viewer(control) as viewer:
            await viewer.wait_for_updates(1, 30)
            status, body = await setup.api("POST", f"{base}/helpline-probe.service/actions",
                                           {"action": "start", "session_id": control})
            assert (status, body) == (200, {"outcome": "started"})
            status, body = await setup.api("GET", base)
            assert status == 200, body
            [probe] = [s for s in body["services"] if s["unit"] == "helpline-probe.service"]
            assert (probe["active"], probe["sub"], probe["description"]) == ("active", "running",
                                                                             "Helpline live probe")

            async def logged() -> bool:
                status, body = await setup.api("GET", f"{base}/helpline-probe.service/journal?lines=20")
                assert status == 200, body
                return any(line["message"].startswith("probe started") for line in body["journal"])

            await wait_until(logged, timeout=30, what="the unit's line through the journal route")
            status, body = await setup.api("POST", f"{base}/helpline-probe.service/actions",
                                           {"action": "stop", "session_id": control})
            assert (status, body) == (200, {"outcome": "stopped"})
        rows = await setup.server.db.fetchall("SELECT details FROM audit_log WHERE action = ? ORDER BY seq",
                                              ("device.service.action",))
        details = [json.loads(r["details"]) if isinstance(r["details"], str) else r["details"] for r in rows]
        assert [(d["action"], d["done"]) for d in details] == [("start", True), ("stop", True)], details
