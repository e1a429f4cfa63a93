"""The fault bench: what the service does under SIGKILL, database restart, disk full, restarts and floods.

Prints, in one run:
* health samples produced vs stored across SIGKILL of the server, the data disk filled and (with
  ``--pg``) PostgreSQL stopped (:mod:`fault_samples`);
* how long N agents take to come back after a server restart, reconnecting with the real agent's
  backoff, and the same fleet aged the old way without the reset (:mod:`fault_fleet`);
* the server's fds, RSS and log volume, the API's latency and a real agent's entry under a flood of
  idle and slowloris connections (:mod:`fault_fleet`).

Usage: ``python benchmarks/faults.py [--agents 2000] [--pg] [--only samples|reconnect|flood]``
(root: the disk-full step mounts a small tmpfs; ``--pg`` runs a private PostgreSQL 15 cluster).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.fault_fleet import run_flood, run_reconnect  # noqa: E402
from benchmarks.fault_samples import run_samples  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=2000, help="simulated agents for the reconnect part")
    parser.add_argument("--hold", type=float, default=65.0, help="seconds the fleet is up before the restart")
    parser.add_argument("--idle", type=int, default=2000, help="idle connections per listener in the flood")
    parser.add_argument("--slow", type=int, default=50, help="slowloris clients per listener in the flood")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of the server in the samples part")
    parser.add_argument("--pg", action="store_true", help="samples part on a private PostgreSQL, restarted")
    parser.add_argument("--only", choices=["samples", "reconnect", "flood"])
    args = parser.parse_args()
    lines: list[str] = []
    if args.only in (None, "samples"):
        print("samples across faults …", flush=True)
        lines += run_samples(kills=args.kills, pg=args.pg).lines()
    if args.only in (None, "reconnect"):
        print(f"reconnect of {args.agents} agents …", flush=True)
        lines += asyncio.run(run_reconnect(args.agents, args.hold))
    if args.only in (None, "flood"):
        print("connection flood …", flush=True)
        lines += asyncio.run(run_flood(args.idle, args.slow))
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
