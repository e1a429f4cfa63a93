"""``helpline admin vulns import FILE`` / ``list``: vulnerability feeds from files the administrator brings."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .common import add_server_options, server_config, with_database

if TYPE_CHECKING:
    from server.store import Database

#: Largest feed file read (the Debian tracker's full JSON is ~70 MB).
MAX_FILE_BYTES = 512 * 1024 * 1024


def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    vulns = sub.add_parser("vulns", help="vulnerability feeds: import OSV / Debian Security Tracker files, list")
    vulns_sub = vulns.add_subparsers(dest="vulns_command", metavar="ACTION", required=True)
    imp = vulns_sub.add_parser("import", help="import a feed file and re-match the fleet",
                               description="FILE is an OSV advisory JSON, a JSON list of them, an OSV zip export, "
                               "or the Debian Security Tracker JSON. Importing the same --name replaces it.")
    imp.add_argument("file", type=Path)
    imp.add_argument("--format", choices=["auto", "osv", "debian"], default="auto")
    imp.add_argument("--name", help="feed name (default: the format)")
    imp.add_argument("--release", action="append", default=[], metavar="CODENAME",
                     help="Debian tracker: only this release (repeatable), e.g. bookworm")
    add_server_options(imp)
    imp.set_defaults(handler=_import)
    show = vulns_sub.add_parser("list", help="imported feeds and the most widespread advisories")
    add_server_options(show)
    show.set_defaults(handler=_list)


def _import(args: argparse.Namespace) -> int:
    from server import audit
    from server.cmdb import vulns

    if args.file.stat().st_size > MAX_FILE_BYTES:
        print(f"{args.file}: larger than {MAX_FILE_BYTES} bytes", file=sys.stderr)
        return 1
    try:
        advisories = vulns.parse_file(args.file.read_bytes(), args.format, args.release)
    except vulns.FeedError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 1
    name = args.name or (args.format if args.format != "auto" else "feed")
    if not vulns.FEED_NAME.match(name):
        print(f"bad feed name {name!r}: letters, digits, . _ - (at most 64)", file=sys.stderr)
        return 1

    async def work(db: Database) -> vulns.ImportResult:
        result = await vulns.import_feed(db, name, advisories, time.time())
        async with db.transaction() as tx:
            await audit.append_in(tx, "cli", "cmdb.vulns.import", name,
                                  {"file": str(args.file), "advisories": result.advisories, "matches": result.matches})
        return result

    result = with_database(server_config(args), work)
    print(f"feed {result.feed}: {result.advisories} advisories, {result.ranges} package ranges; "
          f"{result.matches} matches on {result.devices} devices")
    return 0


def _list(args: argparse.Namespace) -> int:
    from server.cmdb import vulns

    async def work(db: Database) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        return await vulns.feeds(db), await vulns.fleet_vulns(db, None, limit=20)

    feeds, top = with_database(server_config(args), work)
    print(json.dumps({"feeds": feeds, "top": top}, indent=2))
    return 0
