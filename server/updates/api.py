"""REST API of self-update: releases (manifest + uploaded artifacts) and rollouts in waves.

Every route needs ADMINISTER on every group (``*``): a rollout changes the software of the fleet.
The server only carries what approvers signed and the bytes they hashed; devices decide.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
from aiohttp import web

from protocol.authority import ReleaseManifest

from .. import api
from ..auth.rights import Right
from ..authority import repository as documents
from . import repository, service

_ADMIN = Right.ADMINISTER
GroupName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class RolloutRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z.+-]{1,64}$")]
    artifact: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._+-]{1,200}$", description=(
        "Which of the manifest's artifacts devices install (default: the only one uploaded)"))] | None = None
    groups: Annotated[list[GroupName], msgspec.Meta(max_length=256, description="Only these groups' devices")] = []
    devices: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(
        max_length=10000, description="Only these devices")] = []
    waves: Annotated[list[int], msgspec.Meta(max_length=20, description=(
        "Cumulative percentages, e.g. [1, 10, 50, 100]"))] = msgspec.field(default_factory=lambda: [100])
    wave_groups: Annotated[list[list[GroupName]], msgspec.Meta(max_length=20, description=(
        "Explicit waves of device groups instead of percentages, e.g. [[\"pilot\"], [\"lab\", \"office\"]]"))] = []
    failure_threshold: Annotated[float, msgspec.Meta(ge=0, le=1, description=(
        "Halt when more than this fraction of released devices refused or failed (a rollback always halts)"))] = 0.0


def routes(data_dir: Path) -> list[api.Route]:
    async def list_releases(request: web.Request) -> web.Response:
        """Release manifests stored as documents, with the artifacts uploaded for each"""
        db = api.db(request)
        out = []
        for row in await documents.list_documents(db):
            if row["kind"] != "release":
                continue
            body = documents.decode_or_none(documents.signed_of(row))
            if not isinstance(body, ReleaseManifest):
                continue
            uploaded = {r["name"]: r["sha256"] for r in await repository.artifacts_of(db, body.version)}
            out.append({"version": body.version, "document_id": row["document_id"], "status": row["status"],
                        "approvals": len(documents.approvals_of(row)), "released_at": body.released_at,
                        "not_after": body.not_after, "expired": body.not_after < time.time(),
                        "artifacts": [{"name": a.name, "sha256": a.sha256, "size": a.size,
                                       "uploaded": uploaded.get(a.name) == a.sha256} for a in body.artifacts]})
        return api.json({"releases": out})

    async def upload_artifact(request: web.Request) -> web.Response:
        """Upload one artifact of a release (the raw bytes; checked against the manifest's size and SHA-256)"""
        version, name = request.match_info["version"], request.match_info["name"]

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in request.content.iter_chunked(256 * 1024):
                yield chunk

        result = await service.receive(api.db(request), data_dir, version, name, chunks(),
                                       actor=f"user:{api.principal(request).username}")
        return api.json(result, status=201 if result["added"] else 200)

    async def create_rollout(request: web.Request) -> web.Response:
        """Roll a release out in waves"""
        body = api.body(request, RolloutRequest)
        plan = service.RolloutPlan(version=body.version, artifact=body.artifact, groups=list(body.groups),
                                   devices=list(body.devices), percents=list(body.waves),
                                   wave_groups=[list(w) for w in body.wave_groups],
                                   failure_threshold=body.failure_threshold)
        row = await service.create_rollout(api.db(request), plan, actor=f"user:{api.principal(request).username}")
        return api.json(service.describe(row), status=201)

    async def list_rollouts(request: web.Request) -> web.Response:
        """List rollouts"""
        return api.json({"rollouts": [service.describe(r) for r in await repository.list_rollouts(api.db(request))]})

    async def get_rollout(request: web.Request) -> web.Response:
        """One rollout with each device's state"""
        db = api.db(request)
        row = await repository.rollout(db, request.match_info["rollout_id"])
        if row is None:
            raise api.ApiError.not_found("rollout")
        return api.json(service.describe(row, await repository.targets(db, row["id"])))

    async def cancel_rollout(request: web.Request) -> web.Response:
        """Cancel a running rollout (devices that installed keep the version)"""
        db = api.db(request)
        row = await repository.rollout(db, request.match_info["rollout_id"])
        if row is None:
            raise api.ApiError.not_found("rollout")
        if not await repository.set_status(db, row["id"], "cancelled", reason="cancelled by an administrator",
                                           actor=f"user:{api.principal(request).username}"):
            raise api.ApiError(409, "not_running", f"rollout {row['id']} is {row['status']}")
        fresh = await repository.rollout(db, row["id"])
        assert fresh is not None
        return api.json(service.describe(fresh))

    return [
        api.Route("GET", "/api/v1/updates/releases", list_releases, _ADMIN, api.GLOBAL, response=dict[str, Any]),
        api.Route("PUT", "/api/v1/updates/releases/{version}/artifacts/{name}", upload_artifact, _ADMIN,
                  api.GLOBAL,
                  response=dict[str, Any], status=201,
                  errors={400: "Not a version or artifact name",
                          404: "No manifest for the version, or it lists no such artifact",
                          409: "The bytes are not the artifact the manifest lists (`artifact_mismatch`)",
                          413: "Larger than the server stores"},
                  description="The request body is the artifact (application/octet-stream, streamed to disk). "
                              "The server keeps only bytes whose size and SHA-256 are the manifest's; devices check "
                              "both again, and the manifest's signatures. Audited."),
        api.Route("POST", "/api/v1/updates/rollouts", create_rollout, _ADMIN, api.GLOBAL, body=RolloutRequest,
                  response=dict[str, Any], status=201,
                  errors={404: "No manifest for the version, or unknown devices",
                          409: "Artifact not uploaded, or no device matches"},
                  description="Wave i+1 is offered only when every device of wave i reconnected on the new "
                              "version (committed) and none rolled back; more refusals/failures than the threshold "
                              "halt it. Audited."),
        api.Route("GET", "/api/v1/updates/rollouts", list_rollouts, _ADMIN, api.GLOBAL, response=dict[str, Any]),
        api.Route("GET", "/api/v1/updates/rollouts/{rollout_id}", get_rollout, _ADMIN, api.GLOBAL,
                  response=dict[str, Any], errors={404: "No such rollout"}),
        api.Route("POST", "/api/v1/updates/rollouts/{rollout_id}/cancel", cancel_rollout, _ADMIN, api.GLOBAL,
                  response=dict[str, Any], errors={404: "No such rollout", 409: "Not running"}),
    ]
