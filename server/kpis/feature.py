"""Wire the KPIs into the server: the routes, the survey on resolution, the metrics collector."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from protocol.surveys import SurveyAnswer

from ..agent_channel import AgentConnection
from ..api import add_routes
from ..store import Database
from . import api, surveys
from .metrics import KpiCollector, refresh_forever

if TYPE_CHECKING:
    from ..app import HelplineServer
    from ..requests.events import RequestEvent

log = logging.getLogger(__name__)


#: The metrics collector of this server (tests read its snapshot).
COLLECTOR: web.AppKey[KpiCollector] = web.AppKey("helpline_kpi_collector", KpiCollector)


def setup(server: HelplineServer) -> None:
    """Declare the routes, the survey's handlers and the metrics collector's refresh task."""
    def db() -> Database:  # the database opens in start()
        return server.db

    async def send_pending(conn: AgentConnection, rows: list[surveys.Row]) -> None:
        if conn.hello is None or surveys.CAPABILITY not in conn.hello.capabilities:
            return  # an agent from before the survey: it stays undelivered until the device is upgraded
        for row in rows:
            at = time.time()
            if await surveys.mark_delivered(db(), row["request_id"], at):
                try:
                    await conn.send(surveys.ask_of(row))
                except Exception:  # the channel broke: not delivered, so asked again when the device reconnects
                    await surveys.unmark_delivered(db(), row["request_id"], at)
                    log.warning("survey not sent; asked again on reconnect", exc_info=True,
                                extra={"request_id": row["request_id"], "device_id": conn.device_id})
                    return
                log.info("survey asked", extra={"request_id": row["request_id"], "device_id": conn.device_id})

    async def on_request_event(event: RequestEvent) -> None:
        if event.kind != "resolved":
            return
        await surveys.create(db(), event.request_id, event.at)  # every node: the first insert wins
        row = await surveys.pending_of(db(), event.request_id)
        conn = server.connections.get(row["device_id"]) if row is not None else None
        if row is not None and conn is not None:  # the node holding the device's channel sends it
            await send_pending(conn, [row])

    async def on_ready(conn: AgentConnection) -> None:
        await send_pending(conn, await surveys.undelivered(db(), conn.device_id))

    async def on_answer(conn: AgentConnection, message: SurveyAnswer) -> None:
        try:
            await surveys.record_answer(db(), conn.device_id, message)
        except surveys.AnswerRefused as exc:
            await conn.reply_error(exc.code, str(exc), message.id)
            return
        log.info("survey answered", extra={"request_id": message.request_id, "device_id": conn.device_id})

    server.request_events.subscribe(on_request_event)
    server.on_agent_ready.append(on_ready)
    server.agent_handlers.register(SurveyAnswer, on_answer)
    add_routes(server.console_app, api.ROUTES)
    collector = server.console_app[COLLECTOR] = KpiCollector()
    server.background.append(lambda: refresh_forever(collector, db))
