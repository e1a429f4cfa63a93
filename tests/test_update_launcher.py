"""The stable launcher on its own: real processes, tiny fake versions, no server.

The launcher file is run as a script by this interpreter (it must need nothing but the standard
library). Each fake version's ``helpline/cli.py`` does one thing: commit its trial and exit, hang,
exit at once, or install the next version and ask to be restarted (exit 10).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.update.launcher import EXIT_RESTART, ROOT_ENV

LAUNCHER = Path(__file__).resolve().parent.parent / "agent" / "update" / "launcher.py"

COMMIT = f"""
import os, pathlib
def main():
    root = pathlib.Path(os.environ["{ROOT_ENV}"])
    (root / "ran").open("a").write(pathlib.Path(__file__).parent.parent.name + "\\n")
    trial = root / "update" / "trial.json"
    if trial.exists():
        trial.unlink()
    return 0
"""
HANG = "import time\ndef main():\n    time.sleep(3600)\n"
CRASH = "def main():\n    raise SystemExit(7)\n"
INSTALL_NEXT = f"""
import json, os, pathlib
def main():
    root = pathlib.Path(os.environ["{ROOT_ENV}"])
    (root / "ran").open("a").write("1.0.0\\n")
    (root / "update").mkdir(exist_ok=True)
    (root / "update" / "trial.json").write_text(json.dumps({{"version": "2.0.0", "previous": "1.0.0", "starts": 0}}))
    os.symlink("versions/2.0.0", root / ".tmp")
    os.replace(root / ".tmp", root / "current")
    return {EXIT_RESTART}
"""


def version(root: Path, name: str, cli: str) -> None:
    package = root / "versions" / name / "helpline"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text(cli)


def point(root: Path, name: str) -> None:
    os.symlink(f"versions/{name}", root / "current")


def trial(root: Path, **fields: object) -> None:
    (root / "update").mkdir(mode=0o700, exist_ok=True)
    (root / "update" / "trial.json").write_text(json.dumps({"version": "2.0.0", "previous": "1.0.0", "starts": 0,
                                                            **fields}))


def launch(root: Path, *, timeout_s: float = 60, commit_timeout: str = "30") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", str(LAUNCHER), "--root", str(root), "--commit-timeout",
                           commit_timeout, "--", "agent", "run"], capture_output=True, text=True, timeout=timeout_s)


def outcome(root: Path) -> dict[str, object]:
    value: dict[str, object] = json.loads((root / "update" / "outcome.json").read_text())
    return value


def ran(root: Path) -> list[str]:
    return (root / "ran").read_text().split()


def test_a_new_version_that_connects_commits_and_stays(tmp_path: Path) -> None:
    """The trial's version removes the marker (what the agent does on welcome): no rollback, it stays current."""
    version(tmp_path, "1.0.0", COMMIT)
    version(tmp_path, "2.0.0", COMMIT)
    point(tmp_path, "2.0.0")
    trial(tmp_path)
    done = launch(tmp_path)
    assert done.returncode == 0, done.stderr
    assert ran(tmp_path) == ["2.0.0"] and os.readlink(tmp_path / "current") == "versions/2.0.0"
    assert not (tmp_path / "update" / "outcome.json").exists() and not (tmp_path / "update" / "trial.json").exists()


def test_exit_10_restarts_into_the_version_just_installed(tmp_path: Path) -> None:
    """1.0.0 installs 2.0.0 and exits 10: the launcher starts 2.0.0 on trial, which commits."""
    version(tmp_path, "1.0.0", INSTALL_NEXT)
    version(tmp_path, "2.0.0", COMMIT)
    point(tmp_path, "1.0.0")
    done = launch(tmp_path)
    assert done.returncode == 0, done.stderr
    assert ran(tmp_path) == ["1.0.0", "2.0.0"]
    assert "trying version 2.0.0 (start 1 of 2" in done.stderr and "version 2.0.0 committed" in done.stderr


def test_a_version_that_exits_before_connecting_is_rolled_back(tmp_path: Path) -> None:
    """2.0.0 exits 7 on trial: current goes back to 1.0.0, which runs; the outcome says why."""
    version(tmp_path, "1.0.0", COMMIT)
    version(tmp_path, "2.0.0", CRASH)
    point(tmp_path, "2.0.0")
    trial(tmp_path, rollout_id="upd_1")
    done = launch(tmp_path)
    assert done.returncode == 0, done.stderr
    assert os.readlink(tmp_path / "current") == "versions/1.0.0" and ran(tmp_path) == ["1.0.0"]
    assert outcome(tmp_path) | {"at": 0} == {"state": "rolled_back", "version": "2.0.0", "from_version": "1.0.0",
                                             "rollout_id": "upd_1", "at": 0,
                                             "reason": "version 2.0.0 exited with status 7 before it connected"}
    assert (tmp_path / "update" / "outcome.json").stat().st_mode & 0o777 == 0o600


def test_a_version_that_does_not_connect_in_time_is_stopped_and_rolled_back(tmp_path: Path) -> None:
    """2.0.0 hangs: after --commit-timeout it is terminated and 1.0.0 starts."""
    version(tmp_path, "1.0.0", COMMIT)
    version(tmp_path, "2.0.0", HANG)
    point(tmp_path, "2.0.0")
    trial(tmp_path)
    started = time.monotonic()
    done = launch(tmp_path, commit_timeout="2")
    assert done.returncode == 0, done.stderr
    assert 2 <= time.monotonic() - started < 40
    assert os.readlink(tmp_path / "current") == "versions/1.0.0" and ran(tmp_path) == ["1.0.0"]
    assert outcome(tmp_path)["reason"] == "version 2.0.0 did not connect to its server within 2 s"


def test_a_trial_interrupted_twice_is_rolled_back_at_the_next_start(tmp_path: Path) -> None:
    """A power cut during each of two tries (the start count is on disk): the third start rolls back without
    trying 2.0.0 again; a trial from the package's own version goes back to it by removing current."""
    version(tmp_path, "1.0.0", COMMIT)
    version(tmp_path, "2.0.0", HANG)
    point(tmp_path, "2.0.0")
    trial(tmp_path, starts=2)
    done = launch(tmp_path)
    assert done.returncode == 0 and ran(tmp_path) == ["1.0.0"], done.stderr
    assert outcome(tmp_path)["reason"] == "version 2.0.0 did not connect in 2 starts"


def test_rollback_to_the_package_version_removes_current(tmp_path: Path) -> None:
    """previous "(package)": the rollback removes ``current`` and the interpreter's own helpline runs (here this
    checkout's, which prints its usage for an unknown command and exits 2)."""
    version(tmp_path, "2.0.0", CRASH)
    point(tmp_path, "2.0.0")
    trial(tmp_path, previous="(package)")
    done = subprocess.run([sys.executable, str(LAUNCHER), "--root", str(tmp_path), "--", "no-such-command"],
                          capture_output=True, text=True, timeout=120)
    assert not (tmp_path / "current").is_symlink()
    assert done.returncode == 2 and "invalid choice: 'no-such-command'" in done.stderr, done.stderr
    assert outcome(tmp_path)["from_version"] == "(package)"


def test_sigterm_stops_the_agent_without_a_rollback(tmp_path: Path) -> None:
    """The service stopping during a trial is not a failed trial: the child gets the signal, nothing moves."""
    version(tmp_path, "1.0.0", COMMIT)
    version(tmp_path, "2.0.0", HANG)
    point(tmp_path, "2.0.0")
    trial(tmp_path)
    process = subprocess.Popen([sys.executable, str(LAUNCHER), "--root", str(tmp_path), "--", "agent", "run"],
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while json.loads((tmp_path / "update" / "trial.json").read_text())["starts"] != 1:
            assert time.monotonic() < deadline, "the trial never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert os.readlink(tmp_path / "current") == "versions/2.0.0"
    assert (tmp_path / "update" / "trial.json").exists() and not (tmp_path / "update" / "outcome.json").exists()


@pytest.mark.parametrize("args", [[], ["--commit-timeout", "0", "--", "x"]])
def test_bad_arguments_are_refused(tmp_path: Path, args: list[str]) -> None:
    done = subprocess.run([sys.executable, str(LAUNCHER), "--root", str(tmp_path), *args], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
