"""Server feature: shared storage for recordings and artifacts, the retention pass, device purge.

Composed after sessions, recordings and tasks: it takes the node's object store (made by
:mod:`server.sessions.recordings_api` from ``object_store``), hands it to the artifact receiver, copies
each recording into it when its session ends (the relay writes locally while the session is live), runs
:func:`.retention.run_pass` every ``[retention] interval_s`` (instead of the task scheduler's own
artifact sweep: one pass for everything), and declares ``POST /api/v1/devices/{device_id}/purge``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from server import api
from server.auth.rights import Right
from server.errors import ApiError
from server.sessions import SESSIONS, repository
from server.sessions.recordings_api import OBJECTS, RECORDINGS_DIR
from server.storage.objects import JetStreamObjectStore, ObjectStore, ObjectStoreError, check_name
from server.tasks.feature import ARTIFACTS
from server.ticker import tick_forever

from . import purge, retention

if TYPE_CHECKING:
    from server.app import HelplineServer

log = logging.getLogger(__name__)


async def share_recording(store: ObjectStore, session_id: str, stream: Path) -> int:
    """Put a finished session's files (.hlrec, .cast, .json, as sealed on disk) into the store; how many."""
    shared = 0
    for path in (stream, stream.with_suffix(".cast"), stream.with_suffix(".json")):
        if not await asyncio.to_thread(path.is_file):
            continue
        name = f"recordings/{path.name}"
        check_name(name)
        await store.put(name, path)
        shared += 1
    return shared


def _recording_hook(server: HelplineServer, store: ObjectStore) -> Callable[[str], Awaitable[None]]:
    async def session_finished(session_id: str) -> None:
        row = await repository.get(server.db, session_id)
        stored = row["recording_path"] if row is not None else None
        if not stored or Path(stored).name != f"{session_id}.hlrec":
            return
        try:
            shared = await share_recording(store, session_id, Path(stored))
        except (ObjectStoreError, OSError) as exc:
            log.error("recording not copied to the object store; only this node can play it",
                      extra={"session_id": session_id, "error": str(exc)})
            return
        log.info("recording shared", extra={"session_id": session_id, "files": shared})
    return session_finished


class PurgeAnswer(msgspec.Struct, kw_only=True):
    """What a purge removed: rows (or files) per table, as audited in ``device.purged``."""

    device_id: str
    purged: bool
    counts: dict[str, int]


def _purge_route(server: HelplineServer) -> api.Route:
    async def purge_device(request: web.Request) -> web.Response:
        """Purge a revoked device's data"""
        device_id = request.match_info["device_id"]
        try:
            counts = await purge.purge_device(
                api.db(request), device_id, actor=api.principal(request).username,
                recordings_dir=request.app[RECORDINGS_DIR], artifacts_dir=server.config.data_dir / "artifacts",
                store=request.app[OBJECTS])
        except purge.NotRevoked as exc:
            if exc.code == "not_found":
                raise ApiError.not_found("device") from exc
            raise ApiError(409, exc.code, exc.message) from exc
        return api.json(PurgeAnswer(device_id=device_id, purged=True, counts=counts))

    return api.Route("POST", "/api/v1/devices/{device_id}/purge", purge_device, Right.ADMINISTER, api.GLOBAL,
                     response=PurgeAnswer,
                     errors={404: "No such device", 409: "The device is not revoked (`device_not_revoked`) or was"
                                                          " purged already (`already_purged`)"},
                     description="Deletes a revoked device's inventory, health history, software, CMDB relations, "
                                 "personal data, recordings (files and store objects), chat, task artifacts and "
                                 "request screenshots; keeps the audit log (`device.purged` with the counts) and a "
                                 "tombstone, so the id is never reused. Needs administer on every group (`*`).")


def setup(server: HelplineServer) -> None:
    store = server.console_app[OBJECTS]
    receiver = server.console_app[ARTIFACTS]
    if isinstance(store, JetStreamObjectStore):  # local: the directories are the store, nothing to copy
        receiver.objects = store
        server.console_app[SESSIONS].finisher.on_finished.append(_recording_hook(server, store))

    async def retention_loop() -> None:
        # A database outage: one warning at its start, one at its end; any other failure with its traceback.
        await tick_forever(
            lambda: retention.run_pass(server.db, server.config, time.time(), store=store, receiver=receiver),
            wake=asyncio.Event(), tick_s=lambda: server.config.retention.interval_s, activity="retention pass",
            logger=log)

    async def close_store(_app: web.Application) -> None:
        await store.close()

    server.background.append(retention_loop)
    server.console_app.on_cleanup.append(close_store)
    api.add_routes(server.console_app, [_purge_route(server)])
