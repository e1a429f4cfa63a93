"""Diagnostics bundle: recent logs, inventory and a health snapshot in one tar.gz in the state dir."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import tarfile
import time
from pathlib import Path
from typing import Annotated, Any

import msgspec
import psutil

from common.files import atomic_write, confined

from .context import ActionContext, Outcome

log = logging.getLogger(__name__)

#: Bundles kept on the device; older ones are removed.
KEEP_BUNDLES = 5


class DiagnosticsParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    log_lines: Annotated[int, msgspec.Meta(ge=0, le=20000)] = 2000
    include_inventory: bool = True


def health_snapshot() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    disks: dict[str, float] = {}
    for part in psutil.disk_partitions(all=False):
        try:
            disks[part.mountpoint] = psutil.disk_usage(part.mountpoint).percent
        except OSError:
            continue
    return {"ts": time.time(), "boot_time": psutil.boot_time(), "cpu_percent": psutil.cpu_percent(interval=0.2),
            "load": list(psutil.getloadavg()), "memory_percent": memory.percent, "disk_percent": disks,
            "processes": len(psutil.pids())}


def _inventory() -> dict[str, Any]:
    try:
        from agent.inventory import collect_inventory
    except ImportError as exc:
        return {"unavailable": f"inventory collector missing: {exc}"}
    return collect_inventory()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
    tar.addfile(info, io.BytesIO(data))


def _write_bundle(path: Path, files: dict[str, bytes]) -> None:
    bundle = io.BytesIO()
    with tarfile.open(fileobj=bundle, mode="w:gz") as tar:
        for name, data in files.items():
            _add(tar, name, data)
    atomic_write(path, bundle.getvalue(), 0o600)
    bundles = sorted(path.parent.glob("diag-*.tar.gz"), key=lambda p: p.stat().st_mtime)
    for old in bundles[:-KEEP_BUNDLES]:
        old.unlink(missing_ok=True)


async def diagnostics(params: DiagnosticsParams, ctx: ActionContext) -> Outcome:
    files: dict[str, bytes] = {}
    notes: list[str] = []
    if params.log_lines:
        try:
            result = await ctx.runner.run(["journalctl", "--no-pager", "-q", "-n", str(params.log_lines)],
                                          timeout_s=min(ctx.timeout_s, 120), output_cap=8 * 1024 * 1024)
            files["logs/journal.txt"] = result.stdout + result.stderr
        except FileNotFoundError:
            notes.append("journalctl not available; no system log")
    if params.include_inventory:
        files["inventory.json"] = json.dumps(await asyncio.to_thread(_inventory), indent=1, default=str).encode()
    files["health.json"] = json.dumps(await asyncio.to_thread(health_snapshot), indent=1).encode()
    files["README.txt"] = ("Helpline diagnostics bundle\n" + "\n".join(notes) + "\n").encode()
    path = confined(ctx.state_dir, "diagnostics", f"diag-{ctx.run_id}.tar.gz")  # the run id is the server's
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    await asyncio.to_thread(_write_bundle, path, files)
    data = path.read_bytes()
    details = {"path": str(path), "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
               "files": sorted(files)}
    return Outcome("succeeded", 0, f"bundle {path} ({len(data)} bytes)\n" + "".join(n + "\n" for n in notes),
                   reason=f"diagnostics bundle of {len(data)} bytes", details=details, artifact=path)
