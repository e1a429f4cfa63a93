"""Server feature: drive rollouts — offer releases to connected devices, hear their reports, move waves.

On every connect (and every tick for devices of a newly released wave) a device with a pending or
unfinished target of a running rollout is offered the release: ``update.offer`` with the manifest as
stored and the artifact's name. A device that says hello already running the version counts as
committed. ``update.status`` reports move the device's target; the tick then decides each running
rollout (:func:`server.updates.waves.decide`): release the next wave, halt, or finish. The artifact
bytes are served on the agent listener (mTLS) only to devices a rollout offered them to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from protocol.update import ARTIFACT_PREFIX, UpdateOffer, UpdateStatus, is_artifact_path

from .. import api
from ..agent_channel import authenticate_device
from ..authority import repository as documents
from ..store import Row, StoreUnavailable
from ..ticker import tick_forever
from . import api as update_api
from . import repository, service, waves
from .repository import ROLLOUT_CHANGED
from .waves import RolloutStatus, Target

if TYPE_CHECKING:
    from ..agent_channel import AgentConnection
    from ..app import HelplineServer

log = logging.getLogger(__name__)

#: The hello capability of agents that take ``update.offer``.
CAPABILITY = "update"


def speaks_update(conn: AgentConnection) -> bool:
    return conn.hello is not None and CAPABILITY in conn.hello.capabilities


@dataclass
class RolloutDriver:
    server: HelplineServer
    tick_s: float = 2.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def offer_to(self, conn: AgentConnection, *, only_pending: bool = False) -> int:
        """Offer ``conn``'s device what its running rollouts hold for it; returns the offers sent."""
        if not speaks_update(conn) or conn.hello is None:
            return 0
        sent = 0
        for target in await repository.offers_for(self.server.db, conn.device_id):
            if only_pending and target["state"] != waves.PENDING:
                continue
            if conn.hello.agent_version == target["version"]:
                await repository.record_state(self.server.db, target["rollout_id"], conn.device_id, "committed",
                                              "", running=conn.hello.agent_version)
                self.wake.set()
                continue
            row = await documents.get_document(self.server.db, target["document_id"])
            if row is None:
                continue
            await conn.send(UpdateOffer(rollout_id=target["rollout_id"], manifest=documents.signed_of(row),
                                        artifact=target["artifact_name"]))
            await repository.mark_offered(self.server.db, target["rollout_id"], conn.device_id)
            sent += 1
            log.info("update offered", extra={"device_id": conn.device_id, "rollout_id": target["rollout_id"],
                                              "version": target["version"]})
        return sent

    async def on_status(self, conn: AgentConnection, message: UpdateStatus) -> None:
        if message.rollout_id is None:
            log.info("update status outside a rollout", extra={"device_id": conn.device_id, "state": message.state,
                                                               "version": message.version})
            return
        row = await repository.record_state(self.server.db, message.rollout_id, conn.device_id, message.state,
                                            message.reason, running=message.running)
        if row is None:
            log.warning("update status for no target of this device", extra={
                "device_id": conn.device_id, "rollout_id": message.rollout_id})
            return
        log.info("update status", extra={"device_id": conn.device_id, "rollout_id": message.rollout_id,
                                         "state": message.state, "reason": message.reason})
        self.wake.set()

    async def decide(self, rollout: Row) -> str:
        rows = await repository.targets(self.server.db, rollout["id"])
        targets = [Target(r["device_id"], r["wave"], r["state"], r["reason"]) for r in rows]
        last = max((t.wave for t in targets), default=0)
        decision = waves.decide(rollout["wave"], last, rollout["failure_threshold"], targets)
        db = self.server.db
        if decision.action == "advance":
            await repository.set_status(db, rollout["id"], RolloutStatus.RUNNING, wave=decision.wave,
                                        reason=f"wave {rollout['wave']} committed")
            log.info("rollout wave released", extra={"rollout_id": rollout["id"], "wave": decision.wave})
        elif decision.action == "halt":
            await repository.set_status(db, rollout["id"], RolloutStatus.HALTED, reason=decision.reason)
            log.warning("rollout halted", extra={"rollout_id": rollout["id"], "reason": decision.reason})
        elif decision.action == "done":
            await repository.set_status(db, rollout["id"], RolloutStatus.DONE, reason="every device committed")
            log.info("rollout done", extra={"rollout_id": rollout["id"]})
        return decision.action

    async def tick(self) -> None:
        for rollout in await repository.running_rollouts(self.server.db):
            try:
                await self.decide(rollout)
            except StoreUnavailable:
                raise
            except Exception:
                log.exception("rollout step failed", extra={"rollout_id": rollout["id"]})
        for device_id in await repository.pending_devices(self.server.db):
            conn = self.server.connections.get(device_id)
            if conn is not None:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.offer_to(conn, only_pending=True)

    async def run(self) -> None:
        await tick_forever(self.tick, wake=self.wake, tick_s=lambda: self.tick_s, activity="rollout tick", logger=log)


#: The server's rollout driver (on the console app; tests shorten its tick there).
DRIVER: web.AppKey[RolloutDriver] = web.AppKey("helpline_rollout_driver", RolloutDriver)


def download_handler(server: HelplineServer) -> Any:
    async def download(request: web.Request) -> web.StreamResponse:
        """A release artifact, to a device a rollout offered it to"""
        device_id, _row, _cert = await authenticate_device(server, request)
        if not is_artifact_path(request.path):
            raise api.ApiError(404, "not_found", "no such artifact")
        sha256 = request.match_info["sha256"]
        path = service.stored_path(server.config.data_dir, sha256)
        if not await repository.may_download(server.db, device_id, sha256) or not path.is_file():
            log.warning("artifact download refused", extra={"device_id": device_id, "sha256": sha256})
            raise api.ApiError(404, "not_found", "no such artifact offered to this device")
        log.info("artifact download", extra={"device_id": device_id, "sha256": sha256})
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    return download


def setup(server: HelplineServer) -> None:
    driver = RolloutDriver(server)
    server.console_app[DRIVER] = driver

    async def on_ready(conn: AgentConnection) -> None:
        await driver.offer_to(conn)

    async def on_status(conn: AgentConnection, message: UpdateStatus) -> None:
        await driver.on_status(conn, message)

    async def on_changed(_subject: str, _payload: dict[str, Any]) -> None:
        driver.wake.set()

    async def subscribe() -> None:
        if server.watcher is not None:
            server.watcher.on(ROLLOUT_CHANGED, on_changed)

    server.agent_handlers.register(UpdateStatus, on_status)
    server.on_agent_ready.append(on_ready)
    server.background.append(driver.run)
    server.background.append(subscribe)
    api.add_routes(server.agent_app, [api.Route(
        "GET", ARTIFACT_PREFIX + "{sha256}", download_handler(server), api.DEVICE_CERT,
        summary="A release artifact (mTLS; only to devices a rollout offered it to)",
        content={"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}})])
    api.add_routes(server.console_app, update_api.routes(server.config.data_dir))
