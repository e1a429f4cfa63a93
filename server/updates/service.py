"""Releases and rollouts, for the REST API and the CLI alike: the manifest a rollout relays, artifact
uploads checked against it, rollouts created with their waves.

The manifest is the ``release`` document ``release:<version>`` in the authority documents (stored by
``helpline approve submit`` or ``helpline admin release upload --manifest``, signed by approvers);
the server reads it only to name and size the artifacts it accepts. It never judges signatures.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.authority import Artifact, ReleaseManifest, SignedDocument

from ..authority import repository as documents
from ..errors import ApiError
from ..store import Database, Row
from . import repository, waves

#: Largest artifact the server stores (an agent wheel is ~2 MB; a .deb with its venv ~30 MB).
MAX_ARTIFACT_BYTES = 512 * 1024 * 1024
_VERSION = re.compile(r"^[0-9A-Za-z.+-]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9._+-]{1,200}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


def artifact_dir(data_dir: Path) -> Path:
    return data_dir / "updates"


def stored_path(data_dir: Path, sha256: str) -> Path:
    if not _SHA.match(sha256):
        raise ValueError("not a SHA-256")
    return artifact_dir(data_dir) / sha256


def document_id(version: str) -> str:
    return f"release:{version}"


async def manifest(db: Database, version: str) -> tuple[SignedDocument, ReleaseManifest]:
    """The stored release document of ``version`` and its body; 404 when there is none."""
    if not _VERSION.match(version):
        raise ApiError.invalid("a version is MAJOR.MINOR.PATCH[-pre][+build]")
    row = await documents.get_document(db, document_id(version))
    if row is None or row["kind"] != "release" or row["status"] != "open":
        raise ApiError(404, "not_found", f"no release manifest for {version} (store the signed document "
                                         f"{document_id(version)} first: helpline approve submit)")
    signed = documents.signed_of(row)
    body = documents.decode_or_none(signed)
    if not isinstance(body, ReleaseManifest):
        raise ApiError(409, "invalid_manifest", f"the stored document {document_id(version)} is not a release manifest")
    return signed, body


def listed_artifact(body: ReleaseManifest, name: str) -> Artifact:
    found = next((a for a in body.artifacts if a.name == name), None)
    if found is None:
        raise ApiError(404, "not_found", f"release {body.version} lists no artifact {name!r} "
                                         f"(it lists {', '.join(a.name for a in body.artifacts)})")
    return found


@dataclass
class Receiving:
    """An upload being written: hashed and counted on the way, renamed into place once it matches."""

    data_dir: Path
    expected: Artifact
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0

    def __post_init__(self) -> None:
        directory = artifact_dir(self.data_dir)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.partial = directory / f".{self.expected.sha256}.{os.getpid()}.{id(self)}.part"
        self._fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.expected.size:
            raise ApiError(409, "artifact_mismatch", f"more than the {self.expected.size} bytes the manifest lists "
                                                     f"for {self.expected.name}")
        self.digest.update(chunk)
        os.write(self._fd, chunk)

    def finish(self) -> Path:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        if self.size != self.expected.size or self.digest.hexdigest() != self.expected.sha256:
            raise ApiError(409, "artifact_mismatch", (
                f"{self.expected.name}: {self.size} bytes with SHA-256 {self.digest.hexdigest()}; the manifest lists "
                f"{self.expected.size} bytes with {self.expected.sha256}"))
        target = stored_path(self.data_dir, self.expected.sha256)
        os.replace(self.partial, target)
        return target

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.partial.unlink(missing_ok=True)


async def receive(db: Database, data_dir: Path, version: str, name: str, chunks: AsyncIterator[bytes], *,
                  actor: str) -> dict[str, Any]:
    """Store an artifact of ``version``'s manifest from ``chunks``; 409 unless it is exactly the listed one."""
    if not _NAME.match(name):
        raise ApiError.invalid("an artifact name is 1-200 of A-Z a-z 0-9 . _ + -")
    _signed, body = await manifest(db, version)
    expected = listed_artifact(body, name)
    if expected.size > MAX_ARTIFACT_BYTES:
        raise ApiError(413, "too_large", f"artifacts are at most {MAX_ARTIFACT_BYTES} bytes")
    receiving = Receiving(data_dir, expected)
    try:
        async for chunk in chunks:
            receiving.write(chunk)
        receiving.finish()
    except BaseException:
        receiving.abort()
        raise
    new = await repository.put_artifact(db, sha256=expected.sha256, version=version, name=name, size=expected.size,
                                        actor=actor)
    return {"version": version, "name": name, "sha256": expected.sha256, "size": expected.size, "added": new}


@dataclass(frozen=True)
class RolloutPlan:
    version: str
    artifact: str | None = None
    groups: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    percents: list[int] = field(default_factory=lambda: [100])
    wave_groups: list[list[str]] = field(default_factory=list)
    failure_threshold: float = 0.0


async def _candidates(db: Database, plan: RolloutPlan) -> list[tuple[str, str]]:
    rows = await db.fetchall("SELECT id, group_name FROM devices WHERE status = 'active' ORDER BY id")
    found = [(r["id"], r["group_name"]) for r in rows]
    if plan.devices:
        unknown = sorted(set(plan.devices) - {d for d, _ in found})
        if unknown:
            raise ApiError(404, "not_found", f"no active device {', '.join(unknown[:5])}")
        found = [(d, g) for d, g in found if d in plan.devices]
    if plan.groups:
        found = [(d, g) for d, g in found if g in plan.groups]
    return found


async def create_rollout(db: Database, plan: RolloutPlan, *, actor: str) -> Row:
    """A rollout of the uploaded artifact to the planned devices, waves assigned; audited."""
    if not 0 <= plan.failure_threshold <= 1:
        raise ApiError.invalid("failure_threshold is a fraction 0..1")
    _signed, body = await manifest(db, plan.version)
    uploaded = {r["name"]: r for r in await repository.artifacts_of(db, plan.version)}
    name = plan.artifact
    if name is None:
        if len(uploaded) != 1:
            raise ApiError(409, "artifact_needed", f"release {plan.version} has {len(uploaded)} uploaded artifacts; "
                                                   "name the one to install")
        name = next(iter(uploaded))
    expected = listed_artifact(body, name)
    if name not in uploaded or uploaded[name]["sha256"] != expected.sha256:
        raise ApiError(409, "not_uploaded", f"upload {name} of release {plan.version} first")
    candidates = await _candidates(db, plan)
    try:
        if plan.wave_groups:
            assignment = waves.by_groups(candidates, plan.wave_groups)
            spec: dict[str, Any] = {"groups": plan.wave_groups}
        else:
            rollout_seed = hashlib.sha256(f"{plan.version}\0{sorted(d for d, _ in candidates)}".encode()).hexdigest()
            assignment = waves.by_percent([d for d, _ in candidates], plan.percents, rollout_seed)
            spec = {"percents": plan.percents}
    except ValueError as exc:
        raise ApiError.invalid(str(exc)) from exc
    if not assignment:
        raise ApiError(409, "no_devices", "no active device matches the rollout's targets")
    return await repository.create_rollout(db, version=plan.version, document_id=document_id(plan.version),
                                           artifact_name=name, artifact_sha256=expected.sha256, waves=spec,
                                           threshold=plan.failure_threshold, assignment=assignment, actor=actor)


def describe(row: Row, targets: list[Row] | None = None) -> dict[str, Any]:
    import json

    view: dict[str, Any] = {
        "rollout_id": row["id"], "version": row["version"], "document_id": row["document_id"],
        "artifact": row["artifact_name"], "sha256": row["artifact_sha256"], "waves": json.loads(row["waves"]),
        "failure_threshold": row["failure_threshold"], "status": row["status"], "wave": row["wave"],
        "reason": row["reason"], "devices": row["device_count"], "created_at": row["created_at"],
        "created_by": row["created_by"], "updated_at": row["updated_at"]}
    if targets is not None:
        counts: dict[str, int] = {}
        for target in targets:
            counts[target["state"]] = counts.get(target["state"], 0) + 1
        view["states"] = counts
        view["targets"] = [{"device_id": t["device_id"], "wave": t["wave"], "state": t["state"], "reason": t["reason"],
                            "offered_at": t["offered_at"], "updated_at": t["updated_at"]} for t in targets]
    return view
