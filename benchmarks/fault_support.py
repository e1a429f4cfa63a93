"""What the fault benches share: run ``helpline``, a server process, a tmpfs, a private PostgreSQL.

Every process and mount made here is undone by the context manager that made it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from helpline.ports import free_port as free_port  # re-exported for the benches

HELPLINE = (sys.executable, "-m", "helpline")
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def helpline(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*HELPLINE, *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"helpline {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; returns the seconds it took, raises after ``timeout``."""
    start = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            if predicate():
                return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not after {timeout:.0f}s")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes], *, grace_s: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not gone after ``grace_s``; nothing if it already ended."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def start_server(config: Path, log: Path, env: dict[str, str], *, extra_env: dict[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    """Start ``helpline server`` and wait until both listeners accept; the caller stops it by PID."""
    with log.open("ab") as out:
        proc = subprocess.Popen([*HELPLINE, "server", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env, **(extra_env or {})}, preexec_fn=preexec_fn)
    ports = [int(env["HELPLINE_AGENT_PORT"]), int(env["HELPLINE_CONSOLE_PORT"])]
    try:
        wait_until(lambda: (proc.poll() is None and all(port_open(p) for p in ports)) or proc.poll() is not None,
                   60, "server listening")
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode}:\n{tail}")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        raise
    return proc


@contextlib.contextmanager
def tmpfs(directory: Path, *, size_mb: int) -> Iterator[Path]:
    """A small tmpfs mounted at ``directory`` (root only): a disk that can be filled for real."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


class PrivatePostgres:
    """A PostgreSQL 15 cluster of its own (initdb in a temp dir, run as ``postgres``), stoppable at will."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"postgresql://bench:bench@127.0.0.1:{self.port}/bench"

    def _as_postgres(self, *args: str) -> None:
        result = subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True,
                                timeout=120, env={**os.environ, "PGPASSWORD": "bench"})
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {(result.stderr or result.stdout).strip()}")

    def __enter__(self) -> PrivatePostgres:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.parent.chmod(0o755)  # a temp dir is 0700; postgres must reach its own below it
        shutil.chown(self.directory, "postgres", "postgres")
        password = self.directory / "pw"
        password.write_text("bench\n")
        shutil.chown(password, "postgres", "postgres")
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.directory / "db"), "-U", "bench",
                          "--pwfile", str(password), "-A", "scram-sha-256")
        self.start()
        self._as_postgres(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "bench", "bench")
        return self

    def start(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "db"), "-w", "-l",
                          str(self.directory / "log"), "-o", f"-p {self.port} -k {self.directory} -h 127.0.0.1",
                          "start")

    def stop(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "db"), "-w", "-m", "fast", "stop")

    def __exit__(self, *_exc: object) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
