"""Task actions through the command layer, the real process runner, and the agent's own checks."""

from __future__ import annotations

import os
import tarfile
import time
from pathlib import Path

import pytest

from agent.tasks.authorize import check_request
from agent.tasks.catalog import CATALOG, BadParams, parse_params
from agent.tasks.commands import CommandResult, ProcessRunner, RecordingRunner
from agent.tasks.context import ActionContext
from agent.tasks.store import TaskLedger
from protocol.tasks import MAX_SCRIPT_BYTES, TaskRun
from tests.harness import wait_until


def _ctx(tmp_path: Path, runner, **kw) -> ActionContext:
    return ActionContext(run_id="r_test", runner=runner, state_dir=tmp_path, timeout_s=60, output_cap=4096, **kw)


async def _run(action: str, params: dict, ctx: ActionContext, script: str = ""):
    spec = CATALOG[action]
    return await spec.run(parse_params(spec, params), ctx, script)


async def test_reboot_with_logged_in_user_sends_wall_then_delayed_shutdown(tmp_path: Path) -> None:
    """With a user logged in, reboot runs `wall MSG` then `shutdown -r +N MSG` (nothing is really run)."""
    runner = RecordingRunner()
    ctx = _ctx(tmp_path, runner, logged_in_users=lambda: ["bob", "bob"])
    outcome = await _run("reboot", {"message": "Reboot for updates", "delay_min": 10}, ctx)
    assert runner.calls == [["wall", "Reboot for updates"], ["shutdown", "-r", "+10", "Reboot for updates"]]
    assert outcome.status == "succeeded" and outcome.details == {"logged_in_users": ["bob"], "delay_min": 10}


async def test_reboot_without_users_is_immediate_and_delay_is_bounded(tmp_path: Path) -> None:
    """Nobody logged in: `shutdown -r now`; a postpone beyond 60 minutes is refused as a bad parameter."""
    runner = RecordingRunner()
    outcome = await _run("reboot", {}, _ctx(tmp_path, runner))
    assert runner.calls == [["shutdown", "-r", "now", "IT maintenance: this computer will restart. Save your work."]]
    assert outcome.status == "succeeded"
    with pytest.raises(BadParams):
        parse_params(CATALOG["reboot"], {"delay_min": 61})
    with pytest.raises(BadParams):
        parse_params(CATALOG["reboot"], {"message": "x\ny"})


async def test_apt_apply_and_check_run_the_expected_commands(tmp_path: Path) -> None:
    """apt: update then a non-interactive upgrade; check counts `Inst` lines of a simulated upgrade."""
    runner = RecordingRunner()
    which = lambda p: "/usr/bin/apt-get" if p == "apt-get" else None  # noqa: E731
    outcome = await _run("updates", {"mode": "apply"}, _ctx(tmp_path, runner, which=which))
    assert runner.calls == [["apt-get", "update", "-q"],
                            ["apt-get", "-y", "-q", "-o", "Dpkg::Options::=--force-confdef", "-o",
                             "Dpkg::Options::=--force-confold", "upgrade"]]
    assert runner.envs[1]["DEBIAN_FRONTEND"] == "noninteractive"
    assert outcome.status == "succeeded"
    runner = RecordingRunner()
    runner.answer(["apt-get", "-s"], CommandResult(0, b"Inst libc6 [2.36] (2.37 Debian-Security)\nInst vim [9]\n"))
    outcome = await _run("updates", {"mode": "check"}, _ctx(tmp_path, runner, which=which))
    assert runner.calls[-1] == ["apt-get", "-s", "-q", "upgrade"] and outcome.details["pending"] == 2


async def test_dnf_check_exit_100_means_updates_available(tmp_path: Path) -> None:
    """dnf: `check-update --security` exiting 100 is success with the pending count; a failed upgrade is reported."""
    which = lambda p: "/usr/bin/dnf" if p == "dnf" else None  # noqa: E731
    runner = RecordingRunner()
    runner.answer(["dnf", "-q", "check-update"], CommandResult(100, b"kernel.x86_64 6.1 updates\nbash.x86_64 5.2 up\n"))
    outcome = await _run("updates", {"mode": "check", "security_only": True}, _ctx(tmp_path, runner, which=which))
    assert runner.calls == [["dnf", "-q", "check-update", "--security"]]
    assert outcome.status == "succeeded" and outcome.details["pending"] == 2
    runner = RecordingRunner()
    runner.answer(["dnf", "-y"], CommandResult(1, b"", b"no space"))
    outcome = await _run("updates", {"mode": "apply"}, _ctx(tmp_path, runner, which=which))
    assert runner.calls == [["dnf", "-y", "upgrade"]] and outcome.status == "failed" and outcome.stderr == "no space"


async def test_updates_without_package_manager_fail_clearly(tmp_path: Path) -> None:
    """No apt/dnf/winget/softwareupdate found: failed with a reason, nothing run."""
    runner = RecordingRunner()
    outcome = await _run("updates", {"mode": "apply"}, _ctx(tmp_path, runner))
    assert outcome.status == "failed" and "no supported package manager" in outcome.reason and runner.calls == []


async def test_restart_service_validates_the_name(tmp_path: Path) -> None:
    """restart_service runs `systemctl restart -- NAME`; names with options or shell syntax are refused."""
    runner = RecordingRunner()
    await _run("restart_service", {"name": "nginx.service"}, _ctx(tmp_path, runner))
    assert runner.calls == [["systemctl", "restart", "--", "nginx.service"]]
    for bad in ["-H evil", "a;b", "", "x" * 200, "../x"]:
        with pytest.raises(BadParams):
            parse_params(CATALOG["restart_service"], {"name": bad})


async def test_clear_temp_removes_only_old_regular_files_and_reports_sizes(tmp_path: Path) -> None:
    """Old files go, new files and symlink targets stay; freed bytes are reported."""
    tmp, outside = tmp_path / "tmp", tmp_path / "outside"
    (tmp / "sub").mkdir(parents=True)
    outside.mkdir()
    old, new, keep = tmp / "sub" / "old.bin", tmp / "new.bin", outside / "precious"
    old.write_bytes(b"x" * 1000)
    new.write_bytes(b"y" * 10)
    keep.write_bytes(b"z")
    os.utime(old, (time.time() - 10 * 86400,) * 2)
    os.utime(keep, (time.time() - 10 * 86400,) * 2)
    (tmp / "link").symlink_to(outside)
    ctx = _ctx(tmp_path, RecordingRunner(), temp_targets={"tmp": [tmp]})
    outcome = await _run("clear_temp", {"targets": ["tmp"], "older_than_days": 7}, ctx)
    assert outcome.details["bytes_freed"] == 1000 and not old.exists() and new.exists() and keep.exists()
    with pytest.raises(BadParams):
        parse_params(CATALOG["clear_temp"], {"targets": ["/etc"]})


async def test_diagnostics_bundle_is_written_and_its_size_reported(tmp_path: Path) -> None:
    """The bundle holds logs, inventory and a health snapshot; path and size are in the details."""
    runner = RecordingRunner()
    runner.answer(["journalctl"], CommandResult(0, b"log line\n"))
    outcome = await _run("diagnostics", {"log_lines": 10, "include_inventory": False}, _ctx(tmp_path, runner))
    path = Path(outcome.details["path"])
    assert path.parent == tmp_path / "diagnostics" and path.stat().st_size == outcome.details["size"]
    with tarfile.open(path) as tar:
        names = tar.getnames()
        assert tar.extractfile("logs/journal.txt").read() == b"log line\n"
    assert {"health.json", "logs/journal.txt"} <= set(names)
    assert runner.calls == [["journalctl", "--no-pager", "-q", "-n", "10"]]


async def test_process_runner_caps_output_and_records_exit_status(tmp_path: Path) -> None:
    """The real runner keeps at most the cap per stream, says so, and records the exit status."""
    result = await ProcessRunner().run(["sh", "-c", "head -c 100000 /dev/zero; echo e >&2; exit 7"], timeout_s=10,
                                       output_cap=1000)
    assert result.exit_code == 7 and len(result.stdout) == 1000 and result.stderr == b"e\n" and result.truncated


async def test_process_runner_kills_the_whole_tree_at_timeout(tmp_path: Path) -> None:
    """A timed-out command's process group, grandchildren included, is killed."""
    import psutil

    pids = tmp_path / "pids"
    result = await ProcessRunner().run(["sh", "-c", f'sleep 100 & echo $! > {pids}; wait'], timeout_s=0.5,
                                       output_cap=100)
    child = int(pids.read_text())
    try:
        assert result.timed_out and result.exit_code == -9

        def child_gone() -> bool:  # SIGKILL is sent; on a loaded machine the child takes a moment to die
            try:
                return psutil.Process(child).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        await wait_until(child_gone, timeout=5, what="the grandchild killed")
    finally:
        if psutil.pid_exists(child):
            os.kill(child, 9)


def test_static_checks_refuse_oversized_and_misplaced_scripts(tmp_path: Path) -> None:
    """Oversized scripts, scripts for other actions and unknown actions are refused before any document check."""
    base = {"task_id": "t_1", "run_id": "r_1", "technician": "alice"}
    big = TaskRun(action="script", script="#" * (MAX_SCRIPT_BYTES + 1), **base)
    assert "exceeds the limit" in check_request(big).reason
    assert "does not take a script" in check_request(TaskRun(action="reboot", script="x", **base)).reason
    assert "unknown action" in check_request(TaskRun(action="mine_coins", **base)).reason


def test_a_run_without_an_authorization_is_refused_before_anything_else(tmp_path: Path) -> None:
    """A task.run carrying no approver-signed document is refused, whatever the agent holds."""
    from datetime import UTC, datetime

    from agent.tasks.authorize import NO_AUTHORIZATION, decide

    run = TaskRun(task_id="t_1", run_id="r_1", technician="alice", action="clear_temp",
                  params={"targets": ["tmp"], "dry_run": True})
    verdict = decide(run, authority=None, ledger=set(), now=time.time(), local=datetime.now(UTC), tz=UTC)
    assert verdict.kind == "refuse" and verdict.reason == NO_AUTHORIZATION


def test_replay_ledger_claims_each_occurrence_once_across_reopen(tmp_path: Path) -> None:
    """An occurrence claimed by one run cannot be claimed by another, also after the ledger is reopened; it is
    forgotten only a day after its document expired."""
    ledger = TaskLedger(tmp_path / "tasks.db")
    now = time.time()
    assert ledger.claim("task-1@once", "r1", expires_at=now + 3600) is None
    assert ledger.claim("task-1@once", "r2", expires_at=now + 3600) == "r1"
    assert "task-1@once" in ledger.occurrences() and "task-1@1700000000" not in ledger.occurrences()
    ledger.close()
    ledger = TaskLedger(tmp_path / "tasks.db")
    assert ledger.claim("task-1@once", "r3", expires_at=now + 3600) == "r1"
    ledger.prune(now + 3600 + 3600)
    assert "task-1@once" in ledger.occurrences()
    ledger.prune(now + 3600 + 86400 + 1)
    assert "task-1@once" not in ledger.occurrences()
    ledger.close()


def test_ledger_keeps_unacked_results_until_ack(tmp_path: Path) -> None:
    """The ledger de-duplicates runs and keeps a result unacknowledged until ack, across reopen."""
    ledger = TaskLedger(tmp_path / "tasks.db")
    assert ledger.add("r1", "{}", "waiting") and not ledger.add("r1", "{}", "waiting")
    ledger.finish("r1", '{"x": 1}')
    ledger.close()
    ledger = TaskLedger(tmp_path / "tasks.db")
    assert ledger.unacked_results() == [("r1", '{"x": 1}')]
    assert ledger.ack("r1") and ledger.unacked_results() == []
    ledger.close()
