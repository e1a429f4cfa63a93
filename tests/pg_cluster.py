"""A private PostgreSQL cluster for tests that stop the database (the shared one must stay up).

``initdb`` a fresh cluster in a temp directory owned by ``postgres`` and run the ``postgres``
server process itself (not ``pg_ctl``), so the test holds its PID: stopping is SIGINT (fast
shutdown) to that PID, and the cluster is always stopped and removed at the end. Trust
authentication on 127.0.0.1 only, a free port, no fsync (the data is thrown away).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.procs import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
USER = "postgres"


class PrivateCluster:
    def __init__(self) -> None:
        if not (PG_BIN / "postgres").exists():
            raise AssertionError(f"PostgreSQL 15 is not installed ({PG_BIN}); scripts/setup.sh installs it")
        self.directory = Path(tempfile.mkdtemp(prefix="helpline-pg-"))
        shutil.chown(self.directory, USER, USER)
        self.port = free_port()
        self.url = f"postgresql://helpline@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen[bytes] | None = None
        self._run(PG_BIN / "initdb", "-D", str(self.data), "-U", "helpline", "--auth=trust", "--no-sync",
                  "-E", "UTF8", "--locale=C.UTF-8")

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def _run(self, *argv: object) -> None:
        result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, user=USER,
                                cwd=self.directory)
        if result.returncode != 0:
            raise AssertionError(f"{argv[0]} failed ({result.returncode}): {result.stderr}")

    def start(self, timeout: float = 60) -> None:
        """Start the server and return once it accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with (self.directory / "postgres.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.directory),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50"],
                stdout=log, stderr=subprocess.STDOUT, user=USER, cwd=self.directory)
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                                   timeout=10, check=False)
            if ready.returncode == 0:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"postgres exited with {self.proc.returncode}; see {self.directory}/postgres.log")
            if time.monotonic() > deadline:
                raise AssertionError(f"postgres not ready after {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of our server by its PID; SIGKILL if it does not go."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A started private cluster, stopped by PID and deleted when the block ends."""
    cluster = PrivateCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
