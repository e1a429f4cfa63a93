"""Fault bench, part 1: health samples produced vs stored across server faults.

A real server and a real agent (``helpline agent run``, sampling every ``--interval`` s) run
while the server is SIGKILLed and restarted, its data directory's disk is filled, and (with
``--pg``) its PostgreSQL is restarted. At the end the agent drains its outbox and the bench
compares what the agent produced (its outbox's sequence counter) with what the server stored:
a sample lost or stored twice shows as a difference.

Run by ``benchmarks/faults.py``; usable alone: ``python benchmarks/fault_samples.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.fault_support import (  # noqa: E402
    PrivatePostgres,
    free_port,
    helpline,
    start_server,
    stop_process,
    tmpfs,
    wait_until,
)
from server.store import open_database  # noqa: E402


@dataclass
class SampleReport:
    produced: int = 0
    stored: int = 0
    pending: int = 0
    faults: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.produced - self.stored - self.pending

    def lines(self) -> list[str]:
        return [
            f"faults                 {', '.join(self.faults) or 'none'}",
            f"samples produced       {self.produced}",
            f"samples stored         {self.stored}",
            f"still in the outbox    {self.pending}",
            f"lost or duplicated     {self.lost}",
        ]


def outbox_counts(state: Path) -> tuple[int, int]:
    """(highest seq ever assigned, rows still waiting) of the agent's outbox, read beside the agent."""
    with contextlib.closing(sqlite3.connect(f"file:{state / 'outbox.db'}?mode=ro", uri=True, timeout=10)) as db:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        waiting = db.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'health'").fetchone()
    return (int(row[0]) if row else 0), int(waiting[0])


async def stored_samples(database_url: str, device_id: str) -> int:
    db = await open_database(database_url)
    try:
        row = await db.fetchone("SELECT COUNT(*) AS c FROM health_samples WHERE device_id = ?", (device_id,))
        return int(row["c"]) if row else 0
    finally:
        await db.close()


@contextlib.contextmanager
def _agent(state: Path, log: Path, interval: float) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, HELPLINE_HEALTH_INTERVAL_S=str(interval), HELPLINE_BACKOFF_CAP_S="2")
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "helpline", "agent", "run", "--state", str(state)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        stop_process(proc, grace_s=15)


def _fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte; returns the filler to delete."""
    filler = directory / "filler.bin"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(chunk)
            out.flush()
    with contextlib.suppress(OSError), filler.open("ab") as out:
        while True:  # the last partial MiB, a KiB at a time
            out.write(b"\0" * 1024)
            out.flush()
    return filler


def run_samples(*, kills: int = 3, downtime_s: float = 1.0, disk_full_s: float = 5.0, interval: float = 0.1,
                pg: bool = False, pg_down_s: float = 10.0, progress: bool = True) -> SampleReport:
    """The whole part: start, fault, drain, count. Every process it starts is stopped by PID."""
    report = SampleReport()

    def say(text: str) -> None:
        if progress:
            print(f"  {text}", flush=True)

    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="helpline-faults-"))
        stack.callback(shutil.rmtree, root, True)
        data = stack.enter_context(tmpfs(root / "data", size_mb=96)) if os.geteuid() == 0 else root / "data"
        postgres = stack.enter_context(PrivatePostgres(root / "pg")) if pg else None
        database_url = postgres.url if postgres else f"sqlite:///{data / 'helpline.db'}"
        helpline("certs", "init", "--dir", str(data / "pki"), "--server-name", "localhost", "--discard-root")
        config = root / "helpline.toml"
        config.write_text(f'[server]\ndata_dir = "{data}"\nhost = "127.0.0.1"\ndatabase_url = "{database_url}"\n')
        ports = {"HELPLINE_AGENT_PORT": str(free_port()), "HELPLINE_CONSOLE_PORT": str(free_port())}
        server_log = root / "server.log"
        server = start_server(config, server_log, ports)
        try:
            words = helpline("admin", "token", "create", "--group", "bench", "--config", str(config),
                             env=ports).stdout.split()
            state = root / "agent"
            helpline("agent", "enroll", words[3], words[4], "--ca-sha256", words[6], "--state", str(state))
            device_id = json.loads((state / "agent.json").read_text())["device_id"]
            with _agent(state, root / "agent.log", interval):
                wait_until(lambda: asyncio.run(stored_samples(database_url, device_id)) > 10, 60, "first samples")
                for n in range(kills):
                    server.send_signal(signal.SIGKILL)
                    server.wait(timeout=10)
                    time.sleep(downtime_s)  # the outage being measured, not a synchronization
                    server = start_server(config, server_log, ports)
                    say(f"SIGKILL {n + 1}/{kills}: server back")
                report.faults.append(f"{kills}× SIGKILL")
                if os.geteuid() == 0 and disk_full_s > 0:
                    filler = _fill(data)
                    say(f"disk full for {disk_full_s:.0f}s")
                    time.sleep(disk_full_s)
                    filler.unlink()
                    report.faults.append(f"disk full {disk_full_s:.0f}s")
                if postgres is not None:
                    postgres.stop()
                    say(f"PostgreSQL down for {pg_down_s:.0f}s")
                    time.sleep(pg_down_s)
                    postgres.start()
                    report.faults.append(f"PostgreSQL down {pg_down_s:.0f}s")
                # Drain: the agent keeps producing; wait until it has caught up (at most one batch waiting).
                wait_until(lambda: outbox_counts(state)[1] <= 1, 120, "outbox drained")
            report.produced, report.pending = outbox_counts(state)
            report.stored = asyncio.run(stored_samples(database_url, device_id))
        finally:
            stop_process(server, grace_s=15)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--pg", action="store_true", help="run the server on a private PostgreSQL and restart it")
    args = parser.parse_args()
    for line in run_samples(kills=args.kills, pg=args.pg).lines():
        print(line)


if __name__ == "__main__":
    main()
