"""``helpline agent inventory [--json]`` — show exactly what the agent would send now."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocol.messages import InventoryReport


def register_agent(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("inventory", help="collect the inventory and print what would be sent",
                            description="Run every collector and print the inventory report the agent would send "
                            "now: a delta against the checksums the server last acknowledged (kept in the state "
                            "directory), or a full one when there are none or the daily full one is due.")
    parser.add_argument("--json", action="store_true", help="print the exact message (JSON) instead of a summary")
    parser.add_argument("--full", action="store_true", help="show the full inventory, as on first contact")
    parser.add_argument("--state", help="agent state directory (default /var/lib/helpline-agent)")
    parser.add_argument("--config", help="TOML config file ([agent] table)")
    parser.set_defaults(handler=_inventory)


def build_report(state_dir: str | None, config_path: str | None, *, force_full: bool) -> InventoryReport:
    from pathlib import Path

    from agent.inventory import collect_inventory, compute_delta, section_checksums
    from agent.reporting import acked_path, read_acked
    from helpline.commands.agent import agent_config
    from protocol.messages import InventoryReport

    config = agent_config(argparse.Namespace(state=Path(state_dir) if state_dir else None,
                                             config=Path(config_path) if config_path else None))
    inventory = collect_inventory()
    checksums = section_checksums(inventory)
    acked = read_acked(acked_path(config.state_dir))
    full = force_full or acked is None or time.time() - acked.last_full >= config.full_inventory_interval_s
    sections = inventory if full or acked is None else compute_delta(inventory, acked.checksums)
    return InventoryReport(full=full, sections=sections, checksums=checksums)


def _inventory(args: argparse.Namespace) -> int:
    from protocol import codec

    report = build_report(args.state, args.config, force_full=args.full)
    wire = codec.encode(report)
    if args.json:
        print(json.dumps(json.loads(wire), indent=2, ensure_ascii=False))
        return 0
    print(f"{'full' if report.full else 'delta'} inventory report, {len(wire):,} bytes on the wire")
    print(f"{'SECTION':<10}  {'CHECKSUM':<16}  {'BYTES':>9}  SENT")
    for name, digest in report.checksums.items():
        size = len(json.dumps(report.sections[name], separators=(",", ":"))) if name in report.sections else 0
        print(f"{name:<10}  {digest[:16]}  {size:>9,}  {'yes' if name in report.sections else 'unchanged'}")
    return 0
