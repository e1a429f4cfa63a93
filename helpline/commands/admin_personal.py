"""``helpline admin personal-data show|set``: the per-group switch for local accounts and login history,
and the login-history retention (issue 17). Changes are audited and reach connected agents at once."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from .common import add_server_options, server_config, with_database

if TYPE_CHECKING:
    from server.store import Database


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError("on or off")
    return value == "on"


def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    area = sub.add_parser("personal-data", help="personal data: collect local accounts/login history per group, "
                          "login-history retention")
    area_sub = area.add_subparsers(dest="personal_command", metavar="ACTION", required=True)
    show = area_sub.add_parser("show", help="the retention and which groups collect")
    add_server_options(show)
    show.set_defaults(handler=_show)
    change = area_sub.add_parser("set", help="switch a group's collection and/or set the retention",
                                 description="Off: the group's agents stop collecting local accounts and login "
                                 "history at once and the server deletes what it holds for the group.")
    change.add_argument("--group", help="device group to switch (with --collect)")
    change.add_argument("--collect", type=_on_off, metavar="on|off", help="collect local accounts and login history")
    change.add_argument("--login-retention-days", type=int, metavar="DAYS", help="keep login history DAYS days")
    add_server_options(change)
    change.set_defaults(handler=_set)


def _show(args: argparse.Namespace) -> int:
    from server.cmdb import personal_changes

    async def work(db: Database) -> dict[str, Any]:
        return await personal_changes.overview(db, None)

    print(json.dumps(with_database(server_config(args), work), indent=2))
    return 0


def _set(args: argparse.Namespace) -> int:
    from server.cmdb import personal_changes

    if (args.group is None) != (args.collect is None):
        print("--group and --collect go together", file=sys.stderr)
        return 2
    if args.group is None and args.login_retention_days is None:
        print("nothing to set: give --group G --collect on|off and/or --login-retention-days N", file=sys.stderr)
        return 2

    async def work(db: Database) -> dict[str, Any]:
        if args.login_retention_days is not None:
            await personal_changes.set_retention(db, args.login_retention_days, "cli")
        if args.group is not None:
            await personal_changes.set_group(db, args.group, args.collect, "cli")
        return await personal_changes.overview(db, None)

    try:
        result = with_database(server_config(args), work)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0
