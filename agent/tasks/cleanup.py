"""Clear temp/cache directories: only named, built-in targets (the server cannot pick paths)."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from .context import ActionContext, Outcome

log = logging.getLogger(__name__)

Target = Literal["tmp", "var_tmp", "apt_cache", "dnf_cache"]

DEFAULT_TARGETS: dict[str, list[Path]] = {
    "tmp": [Path("/tmp")],  # noqa: S108 - the directory being cleaned, not a temp file we create
    "var_tmp": [Path("/var/tmp")],  # noqa: S108
    "apt_cache": [Path("/var/cache/apt/archives")],
    "dnf_cache": [Path("/var/cache/dnf")],
}


class ClearTempParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    targets: Annotated[list[Target], msgspec.Meta(min_length=1, max_length=8)]
    #: Only files not modified for this many days are removed.
    older_than_days: Annotated[int, msgspec.Meta(ge=0, le=3650)] = 7
    dry_run: bool = False


def clear_tree(root: Path, cutoff: float, dry_run: bool) -> tuple[int, int, int]:
    """Remove regular files older than ``cutoff`` under ``root`` (no symlinks followed, one filesystem).

    Returns (bytes freed, files removed, errors)."""
    freed = removed = errors = 0
    try:
        root_dev = os.lstat(root).st_dev
    except OSError:
        return 0, 0, 0
    for dirpath, dirnames, filenames in os.walk(root, onerror=None):
        keep: list[str] = []
        for name in dirnames:
            try:
                info = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode) and info.st_dev == root_dev:
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)
                if not stat.S_ISREG(info.st_mode) or info.st_mtime >= cutoff:
                    continue
                if not dry_run:
                    os.unlink(path)
                freed += info.st_size
                removed += 1
            except OSError as exc:
                errors += 1
                log.debug("could not remove %s: %s", path, exc)
    return freed, removed, errors


async def clear_temp(params: ClearTempParams, ctx: ActionContext) -> Outcome:
    cutoff = ctx.clock() - params.older_than_days * 86400
    report: dict[str, dict[str, int]] = {}
    total = 0
    for target in params.targets:
        freed = removed = errors = 0
        for root in ctx.temp_targets.get(target, []):
            f, r, e = await asyncio.to_thread(clear_tree, root, cutoff, params.dry_run)
            freed, removed, errors = freed + f, removed + r, errors + e
        report[target] = {"bytes_freed": freed, "files_removed": removed, "errors": errors}
        total += freed
    lines = [f"{name}: {r['files_removed']} files, {r['bytes_freed']} bytes, {r['errors']} errors"
             for name, r in report.items()]
    verb = "would free" if params.dry_run else "freed"
    return Outcome("succeeded", 0, "\n".join(lines) + "\n", reason=f"{verb} {total} bytes",
                   details={"bytes_freed": total, "dry_run": params.dry_run, "targets": report})
