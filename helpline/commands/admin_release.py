"""``helpline admin release upload|rollout|status|cancel`` — signed agent updates on the server's data directory.

``upload`` stores the approver-signed manifest (a ``release`` document, when given and not stored yet)
and the artifact bytes, which must be exactly what the manifest lists; ``rollout`` offers the release to
devices in waves; ``status`` shows rollouts and each device's state. The same as the REST API's
``/api/v1/updates/releases`` and ``/api/v1/updates/rollouts``, also while the server runs (its tick picks
changes up).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import add_server_options, print_table, server_config, with_database

if TYPE_CHECKING:
    from server.store import Database


def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("release", help="signed agent updates: upload, roll out in waves, watch")
    release_sub = parser.add_subparsers(dest="release_command", metavar="ACTION", required=True)

    upload = release_sub.add_parser("upload", help="store a release's signed manifest and its artifacts",
                                    description="Store the approver-signed release manifest (helpline approve draft "
                                    "--kind release …, then sign) unless the server has it, and each artifact file; a "
                                    "file must be exactly the one the manifest lists (name, size, SHA-256).")
    upload.add_argument("version", help="the release's version (its manifest is document release:VERSION)")
    upload.add_argument("--manifest", type=Path, help="the signed release document (JSON), if not stored yet")
    upload.add_argument("--artifact", type=Path, action="append", default=[], metavar="FILE",
                        help="an artifact file, named as in the manifest (repeatable)")
    add_server_options(upload)
    upload.set_defaults(handler=_upload)

    rollout = release_sub.add_parser("rollout", help="offer a release to devices in waves",
                                     description="Wave i+1 is offered only after every device of wave i reconnected "
                                     "on the new version; a rollback halts the rollout, and so do more refusals or "
                                     "failures than --failure-threshold.")
    rollout.add_argument("version")
    rollout.add_argument("--artifact", help="which artifact devices install (default: the only one uploaded)")
    rollout.add_argument("--group", action="append", default=[], help="only this group's devices (repeatable)")
    rollout.add_argument("--device", action="append", default=[], help="only this device (repeatable)")
    waves = rollout.add_mutually_exclusive_group()
    waves.add_argument("--waves", default="100", help="cumulative percentages, e.g. 1,10,50,100 (default 100)")
    waves.add_argument("--wave-groups", help="explicit waves of groups: pilot;lab,office")
    rollout.add_argument("--failure-threshold", type=float, default=0.0,
                         help="halt when more than this fraction of released devices refused or failed (default 0)")
    add_server_options(rollout)
    rollout.set_defaults(handler=_rollout)

    status = release_sub.add_parser("status", help="rollouts, or one rollout with each device's state")
    status.add_argument("rollout_id", nargs="?")
    status.add_argument("--json", action="store_true")
    add_server_options(status)
    status.set_defaults(handler=_status)

    cancel = release_sub.add_parser("cancel", help="cancel a running rollout")
    cancel.add_argument("rollout_id")
    add_server_options(cancel)
    cancel.set_defaults(handler=_cancel)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _fail(text: str) -> int:
    print(f"helpline: {text}", file=sys.stderr)
    return 1


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            yield chunk


def _upload(args: argparse.Namespace) -> int:
    import msgspec

    from protocol.authority import SignedDocument
    from server.authority import repository as documents
    from server.errors import ApiError
    from server.updates import service

    config = server_config(args)
    signed: SignedDocument | None = None
    if args.manifest is not None:
        try:
            signed = msgspec.json.decode(args.manifest.read_bytes(), type=SignedDocument)
        except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _fail(f"{args.manifest}: {exc}")

    async def work(db: Database) -> list[dict[str, Any]]:
        if signed is not None and await documents.get_document(db, service.document_id(args.version)) is None:
            await documents.create_document(db, signed, actor=_actor())
            print(f"stored the manifest {service.document_id(args.version)} "
                  f"({len(signed.approvals)} approval(s))")
        await service.manifest(db, args.version)
        results = []
        for path in args.artifact:
            results.append(await service.receive(db, config.data_dir, args.version, path.name, _chunks(path),
                                                 actor=_actor()))
        return results

    try:
        results = with_database(config, work)
    except ApiError as exc:
        return _fail(f"{exc.message} ({exc.code})")
    for result in results:
        print(f"{result['name']}: {result['size']} bytes, sha256 {result['sha256']} "
              f"({'stored' if result['added'] else 'already stored'})")
    return 0


def _rollout(args: argparse.Namespace) -> int:
    from server.errors import ApiError
    from server.updates import service

    try:
        percents = [int(p) for p in args.waves.split(",")] if not args.wave_groups else [100]
    except ValueError:
        return _fail("--waves takes comma-separated percentages, e.g. 1,10,50,100")
    wave_groups = [[g for g in wave.split(",") if g] for wave in args.wave_groups.split(";")] if args.wave_groups \
        else []
    plan = service.RolloutPlan(version=args.version, artifact=args.artifact, groups=args.group, devices=args.device,
                               percents=percents, wave_groups=wave_groups, failure_threshold=args.failure_threshold)
    try:
        row = with_database(server_config(args), lambda db: service.create_rollout(db, plan, actor=_actor()))
    except ApiError as exc:
        return _fail(f"rollout refused: {exc.message} ({exc.code})")
    view = service.describe(row)
    print(f"rollout {view['rollout_id']}: {view['version']} ({view['artifact']}) to {view['devices']} device(s), "
          f"waves {view['waves']}, status {view['status']}")
    return 0


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _status(args: argparse.Namespace) -> int:
    from server.updates import repository, service

    async def work(db: Database) -> Any:
        if args.rollout_id is None:
            return [service.describe(r) for r in await repository.list_rollouts(db)]
        row = await repository.rollout(db, args.rollout_id)
        return None if row is None else service.describe(row, await repository.targets(db, row["id"]))

    found = with_database(server_config(args), work)
    if found is None:
        return _fail(f"no rollout {args.rollout_id}")
    if args.json:
        print(json.dumps(found, indent=1))
        return 0
    if isinstance(found, list):
        print_table([{**r, "created": _when(r["created_at"])} for r in found],
                    ["rollout_id", "version", "artifact", "status", "wave", "devices", "created", "reason"])
        return 0
    print(f"rollout {found['rollout_id']}: {found['version']} {found['status']} (wave {found['wave']}) "
          f"{found['reason']}".rstrip())
    print_table([{**t, "updated": _when(t["updated_at"])} for t in found["targets"]],
                ["device_id", "wave", "state", "updated", "reason"])
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from server.updates import repository

    done = with_database(server_config(args), lambda db: repository.set_status(
        db, args.rollout_id, "cancelled", reason="cancelled by an administrator", actor=_actor()))
    if not done:
        return _fail(f"rollout {args.rollout_id} is not running")
    print(f"rollout {args.rollout_id} cancelled")
    return 0
