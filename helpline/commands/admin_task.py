"""``helpline admin task run|schedule|list|show|cancel|approve|resume`` — maintenance tasks."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol.tasks import ACTIONS

from .common import add_server_options, parse_duration, print_table, server_config, with_database

if TYPE_CHECKING:
    from server.store import Database, Row


def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("task", help="maintenance tasks: run, schedule, list, cancel")
    task_sub = parser.add_subparsers(dest="task_command", metavar="ACTION", required=True)

    run = task_sub.add_parser("run", help="run a task now (or once, at --at)",
                              description="Run a built-in action or a script on a device or a group, under an "
                              "approver-signed task authorization (helpline approve …): its action, parameters, "
                              "script SHA-256 and window are what runs, and each device checks all of it.")
    _task_options(run)
    run.add_argument("--at", help="start time, ISO 8601 (default: now)")
    run.set_defaults(handler=_run)

    schedule = task_sub.add_parser("schedule", help="a recurring task (its document's signed schedule, in each "
                                   "device's local time)")
    _task_options(schedule)
    schedule.add_argument("--cron", help='five-field cron (default: the document\'s schedule, which it must equal)')
    schedule.set_defaults(handler=_run)

    listing = task_sub.add_parser("list", help="list tasks")
    add_server_options(listing)
    listing.set_defaults(handler=_list)

    show = task_sub.add_parser("show", help="a task and its runs (with output)")
    show.add_argument("task_id")
    show.add_argument("--output", action="store_true", help="print each run's stdout/stderr")
    show.add_argument("--artifact-out", type=Path, metavar="FILE",
                      help="save the run's stored artifact (diagnostics bundle) to FILE")
    show.add_argument("--run", dest="run_id", help="which run's artifact (needed when several runs have one)")
    add_server_options(show)
    show.set_defaults(handler=_show)

    cancel = task_sub.add_parser("cancel", help="cancel a task (running runs are stopped by their agents)")
    cancel.add_argument("task_id")
    add_server_options(cancel)
    cancel.set_defaults(handler=_cancel)

    approve = task_sub.add_parser("approve", help="second-admin approval of a large run")
    approve.add_argument("task_id")
    add_server_options(approve)
    approve.set_defaults(handler=_approve)

    resume = task_sub.add_parser("resume", help="resume a schedule paused by a stopped occurrence")
    resume.add_argument("task_id")
    add_server_options(resume)
    resume.set_defaults(handler=_resume)


def _task_options(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", help="target device id")
    target.add_argument("--group", help="target device group")
    parser.add_argument("--document", required=True, metavar="ID",
                        help="the approver-signed task authorization the runs are made under")
    parser.add_argument("--action", choices=ACTIONS, help="default: the document's (must equal it)")
    parser.add_argument("--params", default=None, help="action parameters as JSON (default: the document's)")
    parser.add_argument("--script", type=Path, help="script file: its SHA-256 must be the one the document names")
    parser.add_argument("--technician", default=None, help="who creates it, as shown and audited (default: your "
                        "login)")
    parser.add_argument("--timeout", type=parse_duration, default=parse_duration("30m"))
    parser.add_argument("--output-cap", type=int, default=65536, help="bytes of stdout/stderr kept (each)")
    parser.add_argument("--window", type=parse_duration, default=parse_duration("1h"),
                        help="how long after the start time a run may still begin (default 1h)")
    parser.add_argument("--jitter", type=parse_duration, default=None, help="random start delay within the window")
    parser.add_argument("--offline", choices=["next", "missed"], default="next",
                        help="device offline during its window: run at the next one, or mark missed")
    parser.add_argument("--wave-percent", type=int, default=None, help="roll out in waves of this %% of devices")
    parser.add_argument("--failure-threshold", type=float, default=0.2,
                        help="stop the rollout when this fraction of finished runs failed (default 0.2)")
    add_server_options(parser)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _run(args: argparse.Namespace) -> int:
    from server.errors import ApiError
    from server.tasks import service
    from server.tasks.spec import TaskSpec
    from server.tasks.status import TaskStatus

    config = server_config(args)
    try:
        params: dict[str, Any] | None = json.loads(args.params) if args.params else None
        if params is not None and not isinstance(params, dict):
            raise ValueError("--params must be a JSON object")
        script = args.script.read_text() if args.script is not None else None
        run_at = datetime.fromisoformat(args.at).timestamp() if getattr(args, "at", None) else None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        print(f"helpline: {exc}", file=sys.stderr)
        return 1
    threshold = config.task_approval_threshold

    async def create(db: Database) -> Row:
        signed = await service.task_document(db, args.document)
        cron = getattr(args, "cron", None)  # run: once; schedule: the document's schedule unless given
        if args.task_command == "schedule" and cron is None:
            cron = signed.schedule
        spec = TaskSpec(
            action=args.action or signed.action, document_id=args.document,
            technician=args.technician or getpass.getuser(),
            params=params if params is not None else dict(signed.params), script=script, device=args.device,
            group=args.group, cron=cron, run_at=run_at, window_s=args.window,
            jitter_s=args.jitter if args.jitter is not None else 0.0, offline_policy=args.offline,
            wave_percent=args.wave_percent, failure_threshold=args.failure_threshold, timeout_s=args.timeout,
            output_cap=args.output_cap)
        return await service.create_task(db, spec, actor=_actor(), approval_threshold=threshold)

    try:
        row = with_database(config, create)
    except ApiError as exc:
        print(f"helpline: task refused: {exc.message} ({exc.code})", file=sys.stderr)
        return 1
    print(f"task {row['id']}: {row['action']} on {row['target_kind']} {row['target']} "
          f"({row['device_count']} device(s)), status {row['status']}")
    if row["status"] == TaskStatus.PENDING_APPROVAL:
        print(f"more than {threshold} devices: another admin must run 'helpline admin task approve {row['id']}'")
    return 0


def _list(args: argparse.Namespace) -> int:
    from server.tasks import repository, views

    rows = with_database(server_config(args), lambda db: repository.list_tasks(db))
    print_table([{**views.describe_task(r), "created": _when(r["created_at"])} for r in rows],
                ["id", "action", "target", "cron", "status", "devices", "created_by", "created"])
    return 0


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else ""


def _show(args: argparse.Namespace) -> int:
    from server.tasks import repository, views

    async def load(db: Database) -> tuple[Any, list[Any]]:
        return await repository.get_task(db, args.task_id), await repository.runs_of_task(db, args.task_id)

    task, runs = with_database(server_config(args), load)
    if task is None:
        print(f"helpline: no task {args.task_id}", file=sys.stderr)
        return 1
    print(json.dumps(views.describe_task(task), indent=1))
    print_table([{**views.describe_run(r, output=False), "ended": _when(r["ended_at"])} for r in runs],
                ["run_id", "device_id", "wave", "status", "exit_code", "ended", "reason"])
    if args.output:
        for run in runs:
            print(f"--- {run['id']} ({run['device_id']}) stdout ---\n{run['stdout']}")
            print(f"--- {run['id']} ({run['device_id']}) stderr ---\n{run['stderr']}")
    if args.artifact_out is not None:
        return _save_artifact(args, runs)
    return 0


def _save_artifact(args: argparse.Namespace, runs: list[Any]) -> int:
    """Copy a run's stored bundle to FILE after checking its sha256; audited like an API download."""
    from server import audit
    from server.storage.keys import storage_key_of
    from server.storage.sealed import SealedReader, SealError
    from server.tasks.artifacts import artifact_info, expired_info, expired_message, sha256_file, stored_path

    with_artifact = [r for r in runs if artifact_info(r) is not None and (args.run_id in (None, r["id"]))]
    expired = [r for r in runs if expired_info(r) is not None and (args.run_id in (None, r["id"]))]
    if not with_artifact and expired:
        for run in expired:
            print(f"helpline: {expired_message(run['id'], expired_info(run) or {})}", file=sys.stderr)
        return 1
    if len(with_artifact) != 1:
        which = ", ".join(r["id"] for r in with_artifact) or "none"
        print(f"helpline: need exactly one run with a stored artifact (found: {which}); use --run RUN_ID",
              file=sys.stderr)
        return 1
    run = with_artifact[0]
    info = artifact_info(run) or {}
    config = server_config(args)
    source = stored_path(config.data_dir, run["id"])
    key = storage_key_of(config)
    if not source.exists() and not _fetch_shared(config, run["id"], source):
        print(f"helpline: the artifact of run {run['id']} is neither on this node nor in the object store",
              file=sys.stderr)
        return 1
    try:
        if sha256_file(source, key) != info.get("sha256"):
            print(f"helpline: {source} does not match the recorded sha256; not copied", file=sys.stderr)
            return 1
        with open(args.artifact_out, "wb") as out:  # unsealed on the way (server/storage/sealed.py)
            for block in SealedReader(source, key):
                out.write(block)
    except (OSError, SealError) as exc:
        print(f"helpline: cannot copy the artifact: {exc}", file=sys.stderr)
        return 1
    with_database(config, lambda db: audit.append(db, _actor(), "task.artifact.download", run["id"], {
        "device_id": run["device_id"], "size": info.get("size"), "sha256": info.get("sha256"), "via": "cli"}))
    print(f"artifact of run {run['id']} ({info.get('size')} bytes, sha256 {info.get('sha256')})"
          f" saved to {args.artifact_out}")
    return 0


def _fetch_shared(config: Any, run_id: str, dest: Path) -> bool:
    """Bring a bundle another node received from the shared object store (server/storage/objects.py)."""
    import asyncio

    from server.storage.objects import artifact_name, ensure_local, from_config

    async def fetch() -> bool:
        store = from_config(config)
        try:
            return await ensure_local(store, artifact_name(run_id), dest)
        finally:
            await store.close()

    return asyncio.run(fetch())


def _cancel(args: argparse.Namespace) -> int:
    from server.errors import ApiError
    from server.tasks import service

    try:
        count = with_database(server_config(args), lambda db: service.cancel_task(db, args.task_id, actor=_actor()))
    except ApiError as exc:
        print(f"helpline: {exc.message}", file=sys.stderr)
        return 1
    print(f"task {args.task_id} cancelled ({count} pending run(s) dropped; running ones are being stopped)")
    return 0


def _change(args: argparse.Namespace, change: Callable[[Database], Awaitable[Row]]) -> Row | None:
    """Run an approve/resume style change; print the refusal and return None when it is refused."""
    from server.errors import ApiError

    try:
        return with_database(server_config(args), change)
    except ApiError as exc:
        print(f"helpline: {exc.message} ({exc.code})", file=sys.stderr)
        return None


def _approve(args: argparse.Namespace) -> int:
    from server.tasks import service

    row = _change(args, lambda db: service.approve_task(db, args.task_id, approver=_actor()))
    if row is None:
        return 1
    print(f"task {row['id']} approved by {row['approved_by']}; {row['device_count']} device(s)")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from server.tasks import service

    row = _change(args, lambda db: service.resume_task(db, args.task_id, actor=_actor()))
    if row is None:
        return 1
    print(f"task {row['id']} resumed: cron {row['cron']} fires again at each device's next occurrence")
    return 0
