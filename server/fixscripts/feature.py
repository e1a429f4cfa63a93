"""Server feature: the scripts of self-service fixes — uploaded by an administrator, fetched by devices.

The signed :class:`~protocol.authority.SelfServiceFix` names its script only by SHA-256; the bytes
come here: ``PUT /api/v1/fix-scripts/{sha256}`` (ADMINISTER on every group, like release artifacts)
takes them only when a stored fix document names that hash and they hash to it (audited
``fix_script.upload``). A device fetches them on the agent listener (mTLS) at
``/agent/fix-scripts/{sha256}`` only while an open, approved fix document that concerns it (device or
group) names them. The server decides nothing about running them: the device verifies the document's
signatures and hashes the bytes itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from protocol.authority import SelfServiceFix
from protocol.requests import FIX_SCRIPT_PREFIX, MAX_FIX_SCRIPT_BYTES

from .. import api, audit
from ..agent_channel import authenticate_device
from ..auth.rights import Right
from ..authority import repository as documents
from ..store import Database, Row
from . import store

if TYPE_CHECKING:
    from ..app import HelplineServer

log = logging.getLogger(__name__)


async def naming(db: Database, sha256: str) -> list[Row]:
    """The open fix documents whose script is ``sha256``."""
    found = []
    for row in await documents.list_documents(db):
        if row["kind"] != "fix" or row["status"] != "open":
            continue
        body = documents.decode_or_none(documents.signed_of(row))
        if isinstance(body, SelfServiceFix) and body.script_sha256 == sha256:
            found.append(row)
    return found


def routes(server: HelplineServer) -> tuple[list[api.Route], list[api.Route]]:
    """(console routes, agent-listener routes)."""
    data_dir = server.config.data_dir

    async def upload(request: web.Request) -> web.Response:
        """Upload the script a self-service fix names (the raw bytes; their SHA-256 must be the path's)"""
        sha256 = request.match_info["sha256"]
        if not store.is_sha256(sha256):
            raise api.ApiError.invalid("the path names the script by its SHA-256 (64 lowercase hex digits)")
        if request.content_length is not None and request.content_length > MAX_FIX_SCRIPT_BYTES:
            raise api.ApiError(413, "too_large", f"a fix script is at most {MAX_FIX_SCRIPT_BYTES} bytes")
        data = await request.content.read(MAX_FIX_SCRIPT_BYTES + 1)
        if len(data) > MAX_FIX_SCRIPT_BYTES:
            raise api.ApiError(413, "too_large", f"a fix script is at most {MAX_FIX_SCRIPT_BYTES} bytes")
        db = api.db(request)
        fixes = await naming(db, sha256)
        if not fixes:
            raise api.ApiError(404, "not_found", "no open fix document names this script (store the signed fix "
                                                 "first: helpline approve submit)")
        try:
            added = await asyncio.to_thread(store.put, data_dir, sha256, data)
        except store.NotTheScript as exc:
            raise api.ApiError(409, "script_mismatch", str(exc)) from exc
        actor = f"user:{api.principal(request).username}"
        if added:
            await audit.append(db, actor, "fix_script.upload", sha256,
                               {"size": len(data), "fixes": [r["document_id"] for r in fixes]})
        return api.json({"sha256": sha256, "size": len(data), "added": added,
                         "fixes": [r["document_id"] for r in fixes]}, status=201 if added else 200)

    async def download(request: web.Request) -> web.StreamResponse:
        """A fix script, to a device an open, approved fix document naming it concerns"""
        device_id, registry, _cert = await authenticate_device(server, request)
        sha256 = request.match_info["sha256"]
        if not store.is_sha256(sha256):
            raise api.ApiError(404, "not_found", "no such fix script")
        rows = await naming(server.db, sha256)
        allowed = any(documents.approvals_of(r) and documents.concerns(r, device_id, registry["group_name"])
                      for r in rows)
        path = store.stored_path(data_dir, sha256)
        if not allowed or not path.is_file():
            log.warning("fix script download refused", extra={"device_id": device_id, "sha256": sha256,
                                                              "named": allowed})
            raise api.ApiError(404, "not_found", "no such fix script for this device")
        log.info("fix script download", extra={"device_id": device_id, "sha256": sha256})
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    console = [api.Route(
        "PUT", "/api/v1/fix-scripts/{sha256}", upload, Right.ADMINISTER, api.GLOBAL, response=dict[str, Any],
        status=201, summary="Upload a self-service fix's script",
        errors={400: "The path is not a SHA-256", 404: "No open fix document names this SHA-256",
                409: "The bytes do not hash to the path's SHA-256",
                413: "Larger than 1 MiB"},
        description="The request body is the script (application/octet-stream). Stored by SHA-256; served over "
                    "mTLS to the devices the fix names, which check the fix's signatures and hash the bytes "
                    "before running them. Audited.")]
    agent = [api.Route(
        "GET", FIX_SCRIPT_PREFIX + "{sha256}", download, api.DEVICE_CERT,
        summary="A self-service fix's script (mTLS; only to devices a fix naming it concerns)",
        content={"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}})]
    return console, agent


def setup(server: HelplineServer) -> None:
    console, agent = routes(server)
    api.add_routes(server.console_app, console)
    api.add_routes(server.agent_app, agent)
