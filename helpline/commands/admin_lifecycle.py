"""``helpline admin retention run [--dry-run]`` and ``helpline admin device purge DEVICE --yes``."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import TYPE_CHECKING, Any

from .common import add_server_options, server_config, with_database

if TYPE_CHECKING:
    from server.config import ServerConfig
    from server.store import Database


def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("retention", help="delete recordings, chat, screenshots, artifacts past their period")
    area = parser.add_subparsers(dest="retention_command", metavar="ACTION", required=True)
    run = area.add_parser("run", help="one retention pass now (the server runs one every [retention] interval_s)",
                          description="Deletes what is older than the [retention] periods (0 = keep forever), "
                          "audited; --dry-run prints what would go and deletes nothing.")
    run.add_argument("--dry-run", action="store_true", help="print what would be deleted; delete nothing")
    add_server_options(run)
    run.set_defaults(handler=_retention_run)


def register_purge(device_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``admin device purge`` (called by admin_device)."""
    purge = device_sub.add_parser("purge", help="delete a revoked device's data (keeps the audit log and a tombstone)")
    purge.add_argument("device_id")
    purge.add_argument("--yes", action="store_true", help="really delete (required)")
    add_server_options(purge)
    purge.set_defaults(handler=_purge)


def _store(config: ServerConfig) -> Any:
    from server.storage.objects import from_config

    return from_config(config)


def _retention_run(args: argparse.Namespace) -> int:
    from server.lifecycle import retention
    from server.storage.keys import sealing_key_of, storage_key_of
    from server.tasks.artifacts import ArtifactReceiver

    config = server_config(args)

    async def work(db: Database) -> retention.RetentionReport:
        store = _store(config)
        receiver = ArtifactReceiver(lambda: db, config.data_dir / "artifacts", seal_key=sealing_key_of(config),
                                    read_key=storage_key_of(config), objects=store if config.object_store != "local"
                                    else None)
        try:
            return await retention.run_pass(db, config, time.time(), store=store, receiver=receiver,
                                            dry_run=args.dry_run)
        finally:
            await store.close()

    report = with_database(config, work)
    print("would delete (dry run):" if args.dry_run else "deleted:")
    for line in report.lines():
        print(f"  {line}")
    return 0


def _purge(args: argparse.Namespace) -> int:
    from server.lifecycle import purge

    if not args.yes:
        print("helpline: purging deletes the device's data for good; add --yes", file=sys.stderr)
        return 2
    config = server_config(args)

    async def work(db: Database) -> dict[str, int]:
        store = _store(config)
        try:
            return await purge.purge_device(db, args.device_id, actor=f"cli:{getpass.getuser()}",
                                            recordings_dir=config.recordings_dir or config.data_dir / "recordings",
                                            artifacts_dir=config.data_dir / "artifacts", store=store)
        finally:
            await store.close()

    try:
        counts = with_database(config, work)
    except purge.NotRevoked as exc:
        print(f"helpline: {exc.message}", file=sys.stderr)
        return 1
    print(f"purged {args.device_id}; kept: the audit log and a tombstone")
    for table, count in sorted(counts.items()):
        print(f"  {table}: {count}")
    return 0
