"""Tier 0 self-service on the device, without a network: which fixes are offered, what runs, what is refused.

The authority store is the real one (tests/test_authority.py's org, a fixed clock); commands go to the task
layer's RecordingRunner, so the exact argv is asserted (the end-to-end run is tests/test_help_fixes.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.help.fixes import SelfService
from agent.tasks.commands import CommandResult, RecordingRunner
from protocol.authority import ParamLimit, RunBudget
from tests.test_authority import NOW, World, make_world, signed
from tests.test_authority_fix_release import fix_body, fix_store


@pytest.fixture
def world() -> World:
    return make_world()


def service(tmp_path: Path, world: World, *bodies: Any, which: tuple[str, ...] = ("resolvectl",)
            ) -> tuple[SelfService, RecordingRunner]:
    store = fix_store(tmp_path, world, *(signed(world, "fix", body, "alice", "bob") for body in bodies))
    runner = RecordingRunner()
    tasks = SimpleNamespace(runner=runner, temp_targets={}, logged_in_users=list, clock=lambda: NOW,
                            which=lambda name: f"/usr/bin/{name}" if name in which else None)
    return SelfService(store, tasks, tmp_path, lambda: NOW), runner  # type: ignore[arg-type]


def restart_fix(**changes: Any) -> Any:
    return fix_body(params={"name": ParamLimit(type="str", max_length=64, required=True)}, **changes)


async def test_a_fix_runs_its_action_with_the_users_values(tmp_path: Path, world: World) -> None:
    """restart_service with the name the user chose (within the signed limits): exactly systemctl restart -- NAME."""
    fixes, runner = service(tmp_path, world, restart_fix())
    assert [f.fix_id for f in fixes.offered()] == ["fix-print"]
    result = await fixes.run("fix-print", {"name": "cups"}, user="ann")
    assert result.ok and result.ran and runner.calls == [["systemctl", "restart", "--", "cups"]]
    assert [e["event"] for e in fixes.authority.audit.entries() if e["event"].startswith("fix.")] == [  # type: ignore[union-attr]
        "fix.allowed", "fix.ran"]


async def test_a_value_the_action_refuses_costs_no_run(tmp_path: Path, world: World) -> None:
    """A service name the action's schema refuses ("../x") is refused before check_fix: the budget is untouched
    and the next, valid run is still allowed."""
    fixes, runner = service(tmp_path, world, restart_fix(budget=RunBudget(max_runs=1, per_seconds=600)))
    bad = await fixes.run("fix-print", {"name": "../x"}, user="ann")
    assert not bad.ok and not bad.ran and "bad parameters" in bad.detail and runner.calls == []
    good = await fixes.run("fix-print", {"name": "cups"}, user="ann")
    assert good.ok, good.detail
    spent = await fixes.run("fix-print", {"name": "cups"}, user="ann")
    assert not spent.ran and "run budget used up" in spent.detail and len(runner.calls) == 1


async def test_a_failing_command_is_a_failed_fix_with_its_output(tmp_path: Path, world: World) -> None:
    """A non-zero exit is a failed fix; the detail (shown, and attached on escalation) carries the output."""
    fixes, runner = service(tmp_path, world, restart_fix())
    runner.answer(["systemctl"], CommandResult(exit_code=5, stderr=b"Unit cups.service not found."))
    result = await fixes.run("fix-print", {"name": "cups"}, user="ann")
    assert result.ran and not result.ok and "exit status 5" in result.detail and "not found" in result.detail


@pytest.mark.parametrize(("which", "argv"), [
    (("resolvectl", "nscd"), ["resolvectl", "flush-caches"]),
    (("systemd-resolve",), ["systemd-resolve", "--flush-caches"]),
    (("nscd",), ["nscd", "--invalidate=hosts"]),
])
async def test_flush_dns_flushes_the_cache_the_device_runs(tmp_path: Path, world: World, which: tuple[str, ...],
                                                           argv: list[str]) -> None:
    """flush_dns picks systemd-resolved first, then the older systemd-resolve, then nscd."""
    fixes, runner = service(tmp_path, world, fix_body(fix_id="fix-dns", title="Flush DNS", action="flush_dns",
                                                      params={}), which=which)
    result = await fixes.run("fix-dns", {}, user="ann")
    assert result.ok and runner.calls == [argv]


async def test_what_is_not_offered(tmp_path: Path, world: World) -> None:
    """Not offered: an action no fix may name (reboot), a script whose bytes are not on the device or do not
    match the signed SHA-256, a fix for another device; a script fix whose bytes match is offered and runs them."""
    script = b"echo fixed\n"
    digest = hashlib.sha256(script).hexdigest()
    bodies = [fix_body(fix_id="fix-reboot", action="reboot", params={}),
              fix_body(fix_id="fix-script", action="script", script_sha256=digest, params={}),
              fix_body(fix_id="fix-other", devices=["dev-2"])]
    fixes, _runner = service(tmp_path, world, *bodies)
    assert fixes.offered() == []
    (tmp_path / "fix-scripts").mkdir()
    (tmp_path / "fix-scripts" / digest).write_bytes(b"echo tampered\n")
    assert fixes.offered() == []
    (tmp_path / "fix-scripts" / digest).write_bytes(script)
    assert [f.fix_id for f in fixes.offered()] == ["fix-script"]
    refused = await fixes.run("fix-reboot", {}, user="ann")
    assert not refused.ran and "no self-service fix fix-reboot is offered" in refused.detail
