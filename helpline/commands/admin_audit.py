"""``helpline admin audit verify|list``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import add_server_options, print_table, server_config, with_database


def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("audit", help="inspect and verify the hash-chained audit log")
    audit_sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_sub.add_parser(
        "verify", help="check every link of the chain; report the first broken one, or newest records deleted",
        description="Walks the hash chain, then checks that the log reaches the head kept in the data "
                    "directory's audit-anchor file (records deleted from the end: 'truncated').")
    verify.add_argument("--anchor", type=Path, metavar="FILE",
                        help="anchor file to check against (default: DATA/audit-anchor; another node's copy "
                             "when several servers share PostgreSQL)")
    add_server_options(verify)
    verify.set_defaults(handler=_verify)
    listing = audit_sub.add_parser("list", help="show recent records")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--action", help="filter by action (wildcard *), e.g. 'session.*'")
    add_server_options(listing)
    listing.set_defaults(handler=_list)


def _verify(args: argparse.Namespace) -> int:
    from server import audit

    config = server_config(args)
    anchor = args.anchor or audit.anchor_path(config.data_dir)
    report = with_database(config, lambda db: audit.verify_with_anchor(db, anchor))
    if report.ok:
        covered = (f"; the anchor's head (record {report.anchor.seq}) is there" if report.anchor else
                   f"; no anchor at {anchor}: deleting the newest records would go unnoticed")
        print(f"audit log intact: {report.records} records{covered}")
        return 0
    if report.problem.startswith("truncated") and report.anchor is not None:
        print(f"audit log BROKEN: {report.problem} (records {report.records + 1}…{report.anchor.seq} were deleted; "
              f"{report.records} records verified)", file=sys.stderr)
        return 1
    print(f"audit log BROKEN at record {report.first_bad_seq}: {report.problem} "
          f"({report.records} records verified before it)", file=sys.stderr)
    return 1


def _list(args: argparse.Namespace) -> int:
    from server import audit

    rows = with_database(server_config(args), lambda db: audit.recent(db, limit=args.limit, action=args.action))
    print_table([{**r, "ts": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["ts"]))} for r in rows],
                ["seq", "ts", "actor", "action", "target", "details"])
    return 0
