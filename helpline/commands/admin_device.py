"""``helpline admin device list|revoke|purge``."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time

from .admin_lifecycle import register_purge
from .common import add_server_options, print_table, server_config, with_database


def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("device", help="list and revoke devices")
    device_sub = parser.add_subparsers(dest="device_command", metavar="ACTION", required=True)
    listing = device_sub.add_parser("list", help="list devices with status and certificate expiry")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    add_server_options(listing)
    listing.set_defaults(handler=_list)
    revoke = device_sub.add_parser("revoke", help="revoke a device: its live connection closes at once")
    revoke.add_argument("device_id")
    add_server_options(revoke)
    revoke.set_defaults(handler=_revoke)
    register_purge(device_sub)


def _fmt_ts(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "never"


def _list(args: argparse.Namespace) -> int:
    from server import devices

    rows = with_database(server_config(args), devices.list_all)
    described = [devices.describe(r) for r in rows]
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    print_table([{**d, "last_seen": _fmt_ts(d["last_seen"]), "cert_expires": _fmt_ts(d["cert_expires"])}
                 for d in described], ["id", "hostname", "group", "status", "last_seen", "cert_expires"])
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from server import devices

    done = with_database(server_config(args),
                         lambda db: devices.revoke(db, args.device_id, actor=f"cli:{getpass.getuser()}"))
    if not done:
        print(f"helpline: no active device {args.device_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.device_id}; its connection is closed and its certificate refused from now on")
    return 0
