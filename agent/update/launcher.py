"""The stable launcher: start the agent from ``ROOT/current``, try a new version, roll back a bad one.

This file runs on its own (standard library only, never importing the agent's packages, which may
be the broken ones): the service starts ``python3 launcher.py --root ROOT -- agent run …`` and the
launcher stays as the agent's parent. Layout of ``ROOT`` (``/opt/helpline-agent`` when installed):

``versions/<v>/``     one agent version each: the helpline packages (an unpacked wheel), run with
                      the launcher's interpreter and its site-packages (the dependencies)
``current``           symlink to ``versions/<v>``, flipped atomically (rename over it); absent: the
                      version the package installed (the interpreter's own site-packages), the *base*
``update/trial.json`` the A/B marker: a version on trial and the one before it, with a start count
``update/outcome.json`` the last update's outcome (committed or rolled back, why) for the agent to report

The agent installs a version, writes ``trial.json``, flips ``current`` and exits with
:data:`EXIT_RESTART`. The launcher then starts ``current`` and watches the trial: when the new agent
has connected to its server it commits (removes ``trial.json`` after writing ``outcome.json``). If it
exits first, or has not committed within ``--commit-timeout`` seconds, the launcher stops it, flips
``current`` back to the previous version, writes ``outcome.json`` (``rolled_back`` and why) and starts
the previous version, which reports it. A trial interrupted by a power cut is tried again at the next
start, at most :data:`MAX_STARTS` times in all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: The agent's exit status asking to be started again from ``current`` (an update was installed).
EXIT_RESTART = 10
#: Starts a version on trial gets (an interrupted trial is tried again once).
MAX_STARTS = 2
DEFAULT_COMMIT_TIMEOUT_S = 120.0
#: Tells the agent where its installation is and that this launcher supervises it (self-update on).
ROOT_ENV = "HELPLINE_LAUNCHER_ROOT"
#: How the agent is started from a version directory: that directory first on sys.path.
BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from helpline.cli import main; sys.exit(main())"
#: How the base version (the package's own, in the interpreter's site-packages) is started.
BOOT_BASE = "import sys; from helpline.cli import main; sys.exit(main())"
#: The ``previous`` of a trial started from the base version: rolling back removes ``current``.
BASE = "(package)"


class Layout:
    """The paths of one installation root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = root / "versions"
        self.current = root / "current"
        self.update = root / "update"
        self.trial = self.update / "trial.json"
        self.outcome = self.update / "outcome.json"
        self.downloads = self.update / "download"

    def version_dir(self, version: str) -> Path:
        if not version or "/" in version or version.startswith(".") or version == BASE:
            raise ValueError(f"not a version name: {version!r}")
        return self.versions / version

    def current_version(self) -> str | None:
        """The version ``current`` points at (None: no such link)."""
        try:
            return Path(os.readlink(self.current)).name
        except OSError:
            return None

    def point_current(self, version: str) -> None:
        """Flip ``current`` to ``versions/<version>`` atomically (a new link renamed over the old one);
        :data:`BASE`: remove it (the package's version runs)."""
        if version == BASE:
            self.current.unlink(missing_ok=True)
            _sync_directory(self.root)
            return
        target = self.version_dir(version)
        if not target.is_dir():
            raise FileNotFoundError(f"no installed version {version} ({target})")
        temporary = self.root / f".current.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        os.symlink(Path("versions") / version, temporary)
        os.replace(temporary, self.current)
        _sync_directory(self.root)


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> dict[str, Any] | None:
    """A marker's content; None when absent. A damaged marker reads as {} (the caller decides)."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write a marker atomically (0600, fsynced, renamed into place)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(value, out, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    _sync_directory(path.parent)


def say(text: str) -> None:
    print(f"helpline-launcher: {text}", file=sys.stderr, flush=True)


class Launcher:
    """Start ``current``, supervise a trial, roll back. One instance per service start."""

    def __init__(self, layout: Layout, args: list[str], *, python: str, commit_timeout_s: float) -> None:
        self.layout, self.args, self.python, self.commit_timeout_s = layout, args, python, commit_timeout_s
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def rollback(self, trial: dict[str, Any], reason: str) -> None:
        """``current`` back to the trial's previous version; the outcome written for it to report."""
        version, previous = str(trial.get("version", "?")), str(trial.get("previous", ""))
        say(f"rolling back from {version} to {previous}: {reason}")
        self.layout.point_current(previous)
        write_json(self.layout.outcome, {"state": "rolled_back", "version": version, "from_version": previous,
                                         "rollout_id": trial.get("rollout_id"), "reason": reason[:250],
                                         "at": time.time()})
        self.layout.trial.unlink(missing_ok=True)

    def _trial(self) -> dict[str, Any] | None:
        trial = read_json(self.layout.trial)
        if trial is not None and (not trial.get("version") or not trial.get("previous")):
            say("the trial marker is damaged; keeping the current version")
            self.layout.trial.unlink(missing_ok=True)
            return None
        return trial

    def _start(self) -> subprocess.Popen[bytes]:
        version = self.layout.current_version()
        env = {**os.environ, ROOT_ENV: str(self.layout.root)}
        if version is None:
            return subprocess.Popen([self.python, "-I", "-B", "-c", BOOT_BASE, *self.args], env=env)
        directory = self.layout.version_dir(version)
        return subprocess.Popen([self.python, "-I", "-B", "-c", BOOT, str(directory), *self.args], env=env)

    def _stop_child(self, child: subprocess.Popen[bytes]) -> int:
        if child.poll() is None:
            child.terminate()
            try:
                return child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        return child.wait()

    def _watch(self, child: subprocess.Popen[bytes], trial: dict[str, Any] | None) -> tuple[int | None, str]:
        """Wait for the child. (exit status, "") when it exits; (None, why) when a trial is to be abandoned."""
        deadline = time.monotonic() + self.commit_timeout_s if trial is not None else None
        while True:
            try:
                status = child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                status = None
            committed = deadline is not None and not self.layout.trial.exists()
            if committed:
                say(f"version {trial and trial.get('version')} committed")
                deadline, trial = None, None
            if status is not None:
                if trial is not None and self.layout.trial.exists() and not self.stopping:
                    return None, f"version {trial.get('version')} exited with status {status} before it connected"
                return status, ""
            if deadline is not None and time.monotonic() > deadline and not self.stopping:
                self._stop_child(child)
                return None, (f"version {trial and trial.get('version')} did not connect to its server within "
                              f"{self.commit_timeout_s:g} s")

    def run(self) -> int:
        while True:
            trial = self._trial()
            if trial is not None:
                starts = int(trial.get("starts", 0)) if str(trial.get("starts", 0)).isdigit() else MAX_STARTS
                if starts >= MAX_STARTS:
                    self.rollback(trial, f"version {trial['version']} did not connect in {starts} starts")
                    trial = None
                else:
                    trial["starts"] = starts + 1
                    write_json(self.layout.trial, trial)
                    say(f"trying version {trial['version']} (start {starts + 1} of {MAX_STARTS}, "
                        f"{self.commit_timeout_s:g} s to connect)")
            if self.stopping:  # the signal came before any child was started
                return 0
            self.child = self._start()
            if self.stopping and self.child.poll() is None:  # it came while the child was starting: pass it on
                self.child.terminate()
            status, why = self._watch(self.child, trial)
            if self.stopping:  # the service is stopping: the child died of the signal we passed on, or exited
                return 0 if status is None or status < 0 else status
            if status is None:
                assert trial is not None
                self.rollback(trial, why)
                continue
            if status == EXIT_RESTART:
                say("the agent installed an update; starting it")
                continue
            return status

    def terminate(self, signum: int, _frame: object) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="helpline-launcher", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="the installation root (versions/, current)")
    parser.add_argument("--python", default=sys.executable, help="interpreter the agent runs on (default: this one)")
    parser.add_argument("--commit-timeout", type=float, default=DEFAULT_COMMIT_TIMEOUT_S,
                        help="seconds a new version has to connect to its server before it is rolled back")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- and the helpline command, e.g. agent run …")
    options = parser.parse_args(argv)
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    if not args:
        parser.error("give the helpline command after --")
    if not 1 <= options.commit_timeout <= 3600:
        parser.error("--commit-timeout must be 1..3600 seconds")
    launcher = Launcher(Layout(options.root), args, python=options.python, commit_timeout_s=options.commit_timeout)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, launcher.terminate)
    try:
        return launcher.run()
    except (OSError, ValueError) as exc:
        say(f"cannot start the agent: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
