"""``helpline admin grant create|approve|list|revoke`` — unattended-access grants.

Works on the server's database and PKI directly (also while the server runs: changes
reach the live server, and from it the agents, through the events table).
"""

from __future__ import annotations

import argparse
import getpass
import time
from datetime import UTC, datetime

from server.errors import ApiError

from .common import add_server_options, parse_duration, print_table, server_config, with_database


def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("grant", help="unattended-access grants")
    grant_sub = parser.add_subparsers(dest="grant_command", metavar="ACTION", required=True)

    create = grant_sub.add_parser("create", help="create a grant (signed at once unless four-eyes is on)",
                                  description="Authorize unattended sessions/tasks on devices or groups.")
    create.add_argument("--device", action="append", default=[], help="device id (repeatable)")
    create.add_argument("--group", action="append", default=[], help="device group (repeatable)")
    create.add_argument("--technician", action="append", default=[], help="username allowed (repeatable)")
    create.add_argument("--role", action="append", default=[], help="role allowed (repeatable)")
    create.add_argument("--action", default="view", help="comma list of view,control,tasks (default view)")
    create.add_argument("--window", action="append", default=[],
                        help="device-local time window, e.g. 'mon-fri 22:00-06:00' (repeatable; none = any time)")
    create.add_argument("--valid", type=parse_duration, default=parse_duration("7d"), help="lifetime (default 7d)")
    create.add_argument("--reason", default="", help="why (shown in audit and listings)")
    create.add_argument("--as", dest="as_user", default=None, help="issuer name (default: your login)")
    add_server_options(create)
    create.set_defaults(handler=_create)

    approve = grant_sub.add_parser("approve", help="approve a pending grant (four-eyes)")
    approve.add_argument("grant_id")
    approve.add_argument("--as", dest="as_user", default=None, help="approver name (default: your login)")
    add_server_options(approve)
    approve.set_defaults(handler=_approve)

    listing = grant_sub.add_parser("list", help="list grants")
    listing.add_argument("--status", choices=["pending", "active", "revoked"], default=None)
    add_server_options(listing)
    listing.set_defaults(handler=_list)

    revoke = grant_sub.add_parser("revoke", help="revoke a grant (agents end sessions running under it)")
    revoke.add_argument("grant_id")
    add_server_options(revoke)
    revoke.set_defaults(handler=_revoke)


def _who(args: argparse.Namespace) -> str:
    return str(args.as_user or getpass.getuser())


def _create(args: argparse.Namespace) -> int:
    from certs.pki import PkiPaths
    from server.grants import store

    config = server_config(args)
    now = time.time()
    try:
        request = store.GrantRequest(
            devices=args.device, groups=args.group, technicians=args.technician, roles=args.role,
            actions=[a.strip() for a in args.action.split(",") if a.strip()], windows=store.parse_windows(args.window),
            not_before=now, not_after=now + args.valid, reason=args.reason)
        grant = store.build(request, _who(args), now=now)
    except ApiError as exc:
        print(f"helpline: {exc.message}")
        return 2
    four_eyes = bool(getattr(config, "grant_four_eyes", False))
    row = with_database(config, lambda db: store.create(db, PkiPaths.from_dir(config.pki_path).grant_key, grant,
                                                        actor=f"cli:{getpass.getuser()}", four_eyes=four_eyes))
    print(f"{row['grant_id']} {row['status']}" + (" (needs approval by another admin)" if four_eyes else ""))
    return 0


def _approve(args: argparse.Namespace) -> int:
    from certs.pki import PkiPaths
    from server.grants import store

    config = server_config(args)
    try:
        key = PkiPaths.from_dir(config.pki_path).grant_key
        row = with_database(config, lambda db: store.approve(db, key, args.grant_id,
                                                             actor=f"cli:{getpass.getuser()}",
                                                             approver=_who(args)))
    except ApiError as exc:
        print(f"helpline: {exc.message}")
        return 2
    print(f"{row['grant_id']} {row['status']}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from server.grants import store

    config = server_config(args)
    rows = with_database(config, lambda db: store.list_grants(db, args.status))
    table = []
    for row in rows:
        grant = store.describe(row)
        table.append({
            "id": grant["grant_id"], "status": grant["status"],
            "scope": ",".join(grant["devices"] + [f"group:{g}" for g in grant["groups"]]),
            "who": ",".join(grant["technicians"] + [f"role:{r}" for r in grant["roles"]]),
            "actions": ",".join(grant["actions"]),
            "windows": "; ".join(f"{w['days']} {w['start']}-{w['end']}" for w in grant["windows"]) or "any",
            "until": datetime.fromtimestamp(grant["not_after"], UTC).strftime("%Y-%m-%d %H:%M"),
            "issuer": grant["issuer"], "approver": grant["approver"] or "",
        })
    print_table(table, ["id", "status", "scope", "who", "actions", "windows", "until", "issuer", "approver"])
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from server.grants import store

    config = server_config(args)
    try:
        row = with_database(config, lambda db: store.revoke(db, args.grant_id, actor=f"cli:{getpass.getuser()}"))
    except ApiError as exc:
        print(f"helpline: {exc.message}")
        return 2
    print(f"{row['grant_id']} {row['status']}")
    return 0
