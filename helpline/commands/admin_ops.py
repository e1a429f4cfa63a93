"""``helpline admin backup FILE`` / ``helpline admin restore FILE`` (server/ops/backup.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_server_options, server_config


def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = sub.add_parser(
        "backup", help="write a consistent backup of the database, the node's keys and state to FILE",
        description="A consistent snapshot while the server runs (SQLite's online backup; PostgreSQL with pg_dump, "
                    "which must be installed), the node's PKI (never a root key), the data directory's state and the "
                    "--config file, with a manifest of SHA-256 checksums. The file holds private keys: it is "
                    "written 0600; keep it like the keys themselves. Recordings and artifacts are not included.")
    backup.add_argument("file", type=Path, metavar="FILE")
    add_server_options(backup)
    backup.set_defaults(handler=_backup)
    restore = sub.add_parser(
        "restore", help="put a backup back (the server must be stopped)",
        description="Checks every checksum and the Helpline version first; refuses while a server runs on the data "
                    "directory and over an existing database or PKI unless --replace. The configuration file in the "
                    "backup is written to DATA/restored-config/ for you to put back.")
    restore.add_argument("file", type=Path, metavar="FILE")
    restore.add_argument("--replace", action="store_true", help="overwrite an existing database and PKI")
    add_server_options(restore)
    restore.set_defaults(handler=_restore)


def _say(message: str) -> None:
    print(f"helpline: {message}", file=sys.stderr, flush=True)


def _backup(args: argparse.Namespace) -> int:
    from server.ops.backup import BackupError, backup

    config = server_config(args)
    try:
        manifest = backup(config, args.file, config_file=args.config, progress=_say)
    except (BackupError, OSError) as exc:
        print(f"helpline: backup failed: {exc}", file=sys.stderr)
        return 1
    size = args.file.stat().st_size
    print(f"backup written to {args.file} ({size / 1e6:.1f} MB; {len(manifest['files'])} files, "
          f"{manifest['engine']} database at migration {max(manifest['migrations'], default=0)})")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from server.ops.backup import BackupError, restore
    from server.ops.lock import ServerRunning

    config = server_config(args)
    try:
        manifest = restore(config, args.file, replace=args.replace, progress=_say)
    except (BackupError, ServerRunning, OSError) as exc:
        print(f"helpline: restore refused: {exc}", file=sys.stderr)
        return 1
    print(f"restored {len(manifest['files'])} files into {config.data_dir} (backup of Helpline "
          f"{manifest['helpline_version']}); start the server")
    return 0
