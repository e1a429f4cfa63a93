"""Receiving run artifacts (the diagnostics bundle) from agents, chunk by chunk.

The agent offers an artifact (``task.artifact.begin`` with size and sha256) and then sends
one chunk per ack, so a bundle never blocks the control channel. Chunks append to
``<run_id>.part`` beside a small ``<run_id>.json`` naming what was promised; a reconnecting
agent resumes at the first chunk the server does not have. The last chunk is hashed: only
a bundle matching the promised sha256 becomes ``<run_id>.tar.gz`` and is recorded in the
run's details; anything else (oversized, out of bounds, bad base64, wrong hash) is
refused, discarded and audited, and a stored artifact is never replaced.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from protocol.tasks import TaskArtifactAck, TaskArtifactBegin, TaskArtifactChunk
from server.storage.objects import ObjectStore, ObjectStoreError, artifact_name
from server.storage.sealed import SealedReader, SealedWriter, StorageKey, is_sealed, plaintext_size, resume_point

from .. import audit
from ..store import Database, Row
from . import repository

log = logging.getLogger(__name__)

#: Largest artifact the server accepts (``task_artifact_max_bytes`` in the config overrides it).
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
#: Actions whose runs may upload an artifact.
ARTIFACT_ACTIONS = frozenset({"diagnostics"})
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def artifact_info(run: Row) -> dict[str, Any] | None:
    """The stored artifact recorded in a run's details, if any."""
    try:
        details = json.loads(run["details"] or "{}")
    except ValueError:
        return None
    info = details.get("artifact") if isinstance(details, dict) else None
    return info if isinstance(info, dict) and info.get("stored") else None


def expired_info(run: Row) -> dict[str, Any] | None:
    """The record of an artifact deleted by the retention policy, if that is what the run has."""
    try:
        details = json.loads(run["details"] or "{}")
    except ValueError:
        return None
    info = details.get("artifact") if isinstance(details, dict) else None
    return info if isinstance(info, dict) and info.get("expired") else None


def expired_message(run_id: str, info: dict[str, Any]) -> str:
    """What a download of an expired artifact answers (API 410, CLI)."""
    when = datetime.fromtimestamp(float(info.get("expired_at", 0)), UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"the diagnostics bundle of run {run_id} was deleted on {when} after the"
            f" {info.get('retention_days', '?')}-day retention period; run the diagnostics task again")


def stored_path(data_dir: Path, run_id: str) -> Path:
    """Where a run's stored artifact lives under the server's data directory."""
    if not _SAFE_ID.match(run_id):
        raise ValueError(f"unsafe run id {run_id!r}")
    return data_dir / "artifacts" / f"{run_id}.tar.gz"


def sha256_file(path: Path, key: StorageKey | None = None) -> str:
    """SHA-256 of the file's plaintext (a sealed file is opened with ``key``)."""
    digest = hashlib.sha256()
    for block in SealedReader(path, key, chunk=1024 * 1024):
        digest.update(block)
    return digest.hexdigest()


@dataclass
class ArtifactReceiver:
    """Server side of artifact uploads; one per server, files under ``directory``."""

    #: The database, looked up per call (the server opens it only when it starts).
    db_of: Callable[[], Database]
    directory: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    #: New uploads are sealed with this key as they arrive (None: in the clear; server/storage/sealed.py).
    seal_key: StorageKey | None = None
    #: Opens what was sealed (also when sealing has since been turned off).
    read_key: StorageKey | None = None
    #: Shared storage every node reads from (server/storage/objects.py); None: this directory alone.
    objects: ObjectStore | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def path_of(self, run_id: str) -> Path:
        if not _SAFE_ID.match(run_id):
            raise ValueError(f"unsafe run id {run_id!r}")
        return self.directory / f"{run_id}.tar.gz"

    def _part(self, run_id: str) -> Path:
        return self.directory / f"{run_id}.part"

    def _meta(self, run_id: str) -> Path:
        return self.directory / f"{run_id}.json"

    async def begin(self, device_id: str, message: TaskArtifactBegin) -> TaskArtifactAck:
        async with self._lock:
            return await self._begin(device_id, message)

    async def chunk(self, device_id: str, message: TaskArtifactChunk) -> TaskArtifactAck:
        async with self._lock:
            return await self._chunk(device_id, message)

    # --- begin ------------------------------------------------------------------------------

    async def _begin(self, device_id: str, msg: TaskArtifactBegin) -> TaskArtifactAck:
        run = await repository.run_with_action(self.db_of(), msg.run_id, device_id)
        if run is None or not _SAFE_ID.match(msg.run_id):
            return await self._refuse(device_id, msg.run_id, "no such run on this device", audit_it=False)
        if artifact_info(run) is not None and self.path_of(msg.run_id).exists():
            return TaskArtifactAck(run_id=msg.run_id, status="stored", reason="already stored")
        if expired_info(run) is not None:
            return await self._refuse(device_id, msg.run_id, "this run's artifact expired under the retention"
                                      " policy", audit_it=False)
        if run["action"] not in ARTIFACT_ACTIONS:
            return await self._refuse(device_id, msg.run_id, f"action {run['action']!r} has no artifact")
        if msg.size > self.max_bytes:
            return await self._refuse(device_id, msg.run_id, f"artifact of {msg.size} bytes exceeds the server's"
                                      f" limit of {self.max_bytes} bytes")
        wanted = {"device_id": device_id, "size": msg.size, "sha256": msg.sha256, "chunk_size": msg.chunk_size,
                  "sealed": self.seal_key is not None}
        next_index = await asyncio.to_thread(self._prepare, msg.run_id, wanted)
        log.info("artifact upload", extra={"device_id": device_id, "run_id": msg.run_id, "size": msg.size,
                                           "resume_at": next_index})
        return TaskArtifactAck(run_id=msg.run_id, status="continue", next_index=next_index)

    def _prepare(self, run_id: str, wanted: dict[str, Any]) -> int:
        """Keep a matching partial upload (cut back to whole chunks) or start a new one."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        meta, part = self._meta(run_id), self._part(run_id)
        try:
            same = json.loads(meta.read_text()) == wanted and part.exists()
        except (OSError, ValueError):
            same = False
        if same and self.seal_key is not None:
            return resume_point(part)  # one sealed record per chunk; a record cut short is removed
        if same:
            whole: int = part.stat().st_size // int(wanted["chunk_size"])
            os.truncate(part, whole * wanted["chunk_size"])
            return whole
        meta.write_text(json.dumps(wanted))
        part.unlink(missing_ok=True)
        if self.seal_key is not None:
            SealedWriter(part, self.seal_key).close(final=False)
        else:
            part.write_bytes(b"")
        part.chmod(0o600)
        return 0

    # --- chunks -----------------------------------------------------------------------------

    async def _chunk(self, device_id: str, msg: TaskArtifactChunk) -> TaskArtifactAck:
        if not _SAFE_ID.match(msg.run_id):
            return await self._refuse(device_id, msg.run_id, "bad run id", audit_it=False)
        try:
            meta = json.loads(self._meta(msg.run_id).read_text())
        except (OSError, ValueError):
            return await self._refuse(device_id, msg.run_id, "no upload begun for this run", audit_it=False)
        if meta.get("device_id") != device_id:
            return await self._refuse(device_id, msg.run_id, "no upload begun for this run", audit_it=False)
        size, chunk_size = int(meta["size"]), int(meta["chunk_size"])
        total = max(1, math.ceil(size / chunk_size))
        sealed = bool(meta.get("sealed"))
        if sealed and self.seal_key is None:
            return await self._refuse(device_id, msg.run_id, "the upload began sealed and sealing is now off;"
                                      " it starts again", discard=True)
        have = await asyncio.to_thread(plaintext_size, self._part(msg.run_id), None)
        expected = have // chunk_size
        if msg.total != total:
            return await self._refuse(device_id, msg.run_id, f"chunk count {msg.total} does not match the"
                                      f" announced size ({total} chunks)", discard=True)
        if have % chunk_size or msg.index != expected:
            return TaskArtifactAck(run_id=msg.run_id, status="continue", next_index=expected)
        try:
            data = base64.b64decode(msg.data, validate=True)
        except (binascii.Error, ValueError):
            return await self._refuse(device_id, msg.run_id, "chunk is not valid base64", discard=True)
        last = msg.index == total - 1
        if len(data) != (size - msg.index * chunk_size if last else chunk_size):
            return await self._refuse(device_id, msg.run_id, f"chunk {msg.index} has {len(data)} bytes, not the"
                                      " announced length", discard=True)
        await asyncio.to_thread(self._append, msg.run_id, data)
        if not last:
            return TaskArtifactAck(run_id=msg.run_id, status="continue", next_index=msg.index + 1)
        digest = await asyncio.to_thread(sha256_file, self._part(msg.run_id), self.seal_key if sealed else None)
        if digest != meta["sha256"]:
            return await self._refuse(device_id, msg.run_id, f"sha256 mismatch: received {digest}, announced"
                                      f" {meta['sha256']}", discard=True)
        return await self._store(device_id, msg.run_id, size, digest)

    def _append(self, run_id: str, data: bytes) -> None:
        if self.seal_key is not None and is_sealed(self._part(run_id)):
            writer = SealedWriter(self._part(run_id), self.seal_key)
            writer.append(data)
            writer.close(final=False)
            return
        with self._part(run_id).open("ab") as fh:
            fh.write(data)

    async def _store(self, device_id: str, run_id: str, size: int, digest: str) -> TaskArtifactAck:
        final = self.path_of(run_id)
        async with self.db_of().transaction() as tx:
            run = await repository.get_run(tx, run_id, device_id=device_id)
            if run is None or artifact_info(run) is not None:
                await asyncio.to_thread(self._discard, run_id)
                return TaskArtifactAck(run_id=run_id, status="stored", reason="already stored")
            details = json.loads(run["details"] or "{}")
            details["artifact"] = {"stored": True, "size": size, "sha256": digest, "stored_at": time.time()}
            await repository.set_details(tx, run_id, json.dumps(details))
            await audit.append_in(tx, f"device:{device_id}", "task.artifact.stored", run_id,
                                  {"size": size, "sha256": digest})
            await asyncio.to_thread(self._finish, run_id, final)
        self._meta(run_id).unlink(missing_ok=True)
        await self._share(run_id, final)
        log.info("artifact stored", extra={"device_id": device_id, "run_id": run_id, "size": size})
        return TaskArtifactAck(run_id=run_id, status="stored")

    async def _share(self, run_id: str, final: Path) -> None:
        """Copy the stored (sealed) bundle to the shared store, so any node can serve it."""
        if self.objects is None:
            return
        try:
            await self.objects.put(artifact_name(run_id), final)
        except (ObjectStoreError, OSError) as exc:
            log.error("artifact not copied to the object store; only this node can serve it",
                      extra={"run_id": run_id, "error": str(exc)})

    # --- retention ---------------------------------------------------------------------------

    async def expire(self, retention_days: int, now: float) -> list[str]:
        """Delete bundles stored more than ``retention_days`` ago (0 = keep forever); run ids expired.

        The run keeps a record (``details.artifact.expired``, size, sha256, when) so a download
        can say why it is gone; each deletion is audited ``task.artifact.expired``.
        """
        if retention_days <= 0:
            return []
        cutoff = now - retention_days * 86400
        db = self.db_of()
        # Pre-filter in SQL (details is JSON text written by _store); the exact test is artifact_info.
        rows = await repository.runs_with_stored_artifacts(db)
        expired: list[str] = []
        async with self._lock:
            for run in rows:
                info = artifact_info(run)
                if info is None or float(info.get("stored_at", now)) >= cutoff:
                    continue
                if await self._expire_one(db, run, info, retention_days, now):
                    expired.append(run["id"])
        return expired

    async def _expire_one(self, db: Database, run: Row, info: dict[str, Any], retention_days: int,
                          now: float) -> bool:
        details = json.loads(run["details"])
        details["artifact"] = {"stored": False, "expired": True, "expired_at": now, "retention_days": retention_days,
                               "size": info.get("size"), "sha256": info.get("sha256"),
                               "stored_at": info.get("stored_at")}
        async with db.transaction() as tx:
            # Conditional on the details read: another node sharing the database may have expired it already.
            if not await repository.swap_details(tx, run["id"], run["details"], json.dumps(details), now):
                return False
            await audit.append_in(tx, "scheduler", "task.artifact.expired", run["id"], {
                "device_id": run["device_id"], "size": info.get("size"), "sha256": info.get("sha256"),
                "stored_at": info.get("stored_at"), "retention_days": retention_days})
        try:
            await asyncio.to_thread(self.path_of(run["id"]).unlink, missing_ok=True)
            if self.objects is not None:
                await self.objects.delete(artifact_name(run["id"]))
        except (OSError, ObjectStoreError) as exc:
            log.error("expired artifact not deleted", extra={"run_id": run["id"], "error": str(exc)})
        log.info("artifact expired", extra={"run_id": run["id"], "retention_days": retention_days})
        return True

    def _finish(self, run_id: str, final: Path) -> None:
        """Close a sealed upload with its final record, then move it into place."""
        part = self._part(run_id)
        if self.seal_key is not None and is_sealed(part):
            SealedWriter(part, self.seal_key).close()
        os.replace(part, final)

    def _discard(self, run_id: str) -> None:
        self._part(run_id).unlink(missing_ok=True)
        self._meta(run_id).unlink(missing_ok=True)

    async def _refuse(self, device_id: str, run_id: str, reason: str, *, discard: bool = False,
                      audit_it: bool = True) -> TaskArtifactAck:
        log.warning("artifact refused", extra={"device_id": device_id, "run_id": run_id, "reason": reason})
        if discard:
            await asyncio.to_thread(self._discard, run_id)
        if audit_it:
            await audit.append(self.db_of(), f"device:{device_id}", "task.artifact.refused", run_id, {"reason": reason})
        return TaskArtifactAck(run_id=run_id, status="refused", reason=reason[:256])
