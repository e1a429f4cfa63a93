"""Agent footprint: full inventory collection time, delta size when nothing changed, and the
idle RSS and CPU of a real ``helpline agent run`` subprocess at the default 60 s interval.

Run: ``.venv/bin/python -m benchmarks.agent_footprint [--window 120] [--entry "helpline agent run"]`` (targets: collection
< 2 s, delta < 2 KB, RSS ≤ 40 MB, CPU ≤ 1 % of one core).

The idle agent is measured twice: as installed (``python -m helpline agent run``: the CLI
registers every subcommand, whose modules import only the standard library until they run),
and with the CLI registering only the ``agent`` subcommand, which is what the agent itself costs. ``--imports``
prints the RSS after each import stage of the agent, in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.inventory import collect_inventory, compute_delta, section_checksums
from protocol import codec
from protocol.messages import InventoryReport
from server.cmdb import inventory_store

REPO = Path(__file__).resolve().parent.parent

#: How the agent process is started: the installed CLI, or the CLI with only its agent subcommand.
ENTRIES: dict[str, list[str]] = {
    "helpline agent run": ["-m", "helpline"],
    "agent subcommand only": ["-c", "import sys, helpline.cli as c; c.COMMANDS = (c.agent,); sys.exit(c.main())"],
}

#: Import stages of the agent, in the order it loads them.
STAGES = ["asyncio", "ssl", "sqlite3", "psutil", "msgspec", "cryptography.x509", "websockets.asyncio.client",
          "protocol", "agent.control_client", "agent.sessions", "agent.reporting", "agent.tasks.feature",
          "agent.runtime", "helpline.commands.agent", "helpline.cli"]

_IMPORT_PROBE = """
import importlib, sys, psutil
rss = lambda: psutil.Process().memory_info().rss / 2**20
print(f"{'interpreter':28} {rss():6.1f} MB")
for name in sys.argv[1:]:
    before = rss()
    importlib.import_module(name)
    print(f"{name:28} {rss():6.1f} MB  (+{rss() - before:.1f})")
"""


def import_breakdown() -> str:
    done = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, *STAGES], cwd=REPO, capture_output=True, text=True,
                          check=True)
    return done.stdout


def bench_collection(runs: int = 3) -> tuple[list[float], int, int]:
    times: list[float] = []
    inventory: dict[str, object] = {}
    for _ in range(runs):
        start = time.perf_counter()
        inventory = collect_inventory()
        times.append(time.perf_counter() - start)
    full = len(codec.encode(InventoryReport(full=True, sections=inventory, checksums=section_checksums(inventory))))
    again = collect_inventory()
    delta = compute_delta(again, section_checksums(inventory))
    size = len(codec.encode(InventoryReport(full=False, sections=delta, checksums=section_checksums(again))))
    return times, full, size


async def bench_idle_agent(window: float, entry: list[str]) -> tuple[list[int], float]:
    """RSS samples (bytes, one a second) and CPU (% of one core) of an idle agent over ``window`` seconds."""
    from tests.harness import enroll_agent, running_server, wait_until

    with tempfile.TemporaryDirectory() as tmp:
        async with running_server(Path(tmp) / "srv") as server:
            state = await enroll_agent(server, Path(tmp) / "agent")
            proc = subprocess.Popen([sys.executable, *entry, "agent", "run", "--state", str(state.directory)],
                                    cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                async def reported() -> bool:
                    return await inventory_store.stored_checksums(server.db, state.device_id) is not None

                await wait_until(reported, timeout=60, what="agent inventory stored")
                await asyncio.sleep(5)  # let the first sample and inventory work finish before measuring idle
                agent = psutil.Process(proc.pid)
                before = agent.cpu_times()
                t0 = time.monotonic()
                rss: list[int] = []
                while time.monotonic() - t0 < window:
                    rss.append(agent.memory_info().rss)
                    await asyncio.sleep(1)
                after = agent.cpu_times()
                cpu = (after.user + after.system - before.user - before.system) / (time.monotonic() - t0) * 100
                return rss, cpu
            finally:
                proc.terminate()
                proc.wait(10)


def rss_drift(samples: list[int]) -> str:
    """RSS at the start and the end of the window (medians of its first and last tenth): flat, or growing."""
    tenth = max(1, len(samples) // 10)
    first, last = statistics.median(samples[:tenth]), statistics.median(samples[-tenth:])
    return (f"first tenth {first / 2**20:.1f} MB, last tenth {last / 2**20:.1f} MB "
            f"({(last - first) / 2**10:+.0f} kB over {len(samples)} samples)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", type=float, default=120.0, help="idle measurement window in seconds")
    parser.add_argument("--imports", action="store_true", help="also print RSS after each import stage")
    parser.add_argument("--entry", choices=list(ENTRIES), help="measure only this way of starting the agent "
                        "(an hour-long --window per entry)")
    args = parser.parse_args()
    if args.imports:
        print(import_breakdown())
    times, full, delta = bench_collection()
    print(f"full inventory collection: median {statistics.median(times):.2f} s, max {max(times):.2f} s "
          f"({full:,} bytes on the wire)")
    print(f"delta when nothing changed: {delta:,} bytes")
    for label, entry in ENTRIES.items():
        if args.entry not in (None, label):
            continue
        rss, cpu = asyncio.run(bench_idle_agent(args.window, entry))
        print(f"idle agent, {label} (real subprocess, 60 s health interval, {args.window:.0f} s window): "
              f"RSS max {max(rss) / 2**20:.1f} MB, CPU {cpu:.2f} % of one core")
        print(f"  RSS drift: {rss_drift(rss)}")


if __name__ == "__main__":
    main()
