"""Ask an online neighbour to wake a sleeping device before its maintenance window.

The task scheduler calls :meth:`Waker.tick` every pass. A queued run that starts within
:attr:`Waker.lead_s` (or whose delivery window is open now) on a device with no live control
channel gets one wake request per :attr:`Waker.retry_s`: :mod:`.planner` picks an online agent
announcing the "wake" capability on a network the sleeper's inventory names, the request goes
over that agent's control channel, and both the request and the agent's answer are audited.
Only this node's connections are candidates (with several nodes each asks its own agents).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from protocol.wake import WakeRequest, WakeResult

from .. import audit
from ..store import Database
from ..tasks import repository
from .planner import plan

if TYPE_CHECKING:
    from ..agent_channel import AgentConnection
    from ..app import HelplineServer

log = logging.getLogger(__name__)

#: What an agent announces in hello when it relays wake requests (agent/control_client.py).
CAPABILITY = "wake"


async def network_section(db: Database, device_id: str) -> Any:
    """The device's ``network`` inventory section as last stored, or None (one row, not the whole inventory)."""
    row = await db.fetchone("SELECT data FROM inventory_sections WHERE device_id = ? AND section = ?",
                            (device_id, "network"))
    return json.loads(row["data"]) if row is not None else None


@dataclass
class Waker:
    server: HelplineServer
    #: How long before a run's start the sleeping device is woken (boot, connect, take the run).
    lead_s: float = 600.0
    #: A device still asleep is asked for again after this long.
    retry_s: float = 300.0
    _asked: dict[str, float] = field(default_factory=dict)

    async def tick(self, now: float) -> int:
        """Send the wake requests due now; how many went out."""
        db = self.server.db
        self._asked = {d: t for d, t in self._asked.items() if now - t < self.retry_s}
        online = set(self.server.connections.device_ids())
        sleepers: dict[str, Any] = {}
        for run in await repository.runs_starting(db, now + self.lead_s, now, grace_s=self.lead_s):
            device = run["device_id"]
            if device not in online and device not in self._asked and device not in sleepers:
                sleepers[device] = run
        if not sleepers:
            return 0
        relays = {device: conn for device in online if (conn := self.server.connections.get(device)) is not None
                  and conn.hello is not None and CAPABILITY in conn.hello.capabilities}
        sections = {device: await network_section(db, device) for device in relays}
        sent = 0
        for device, run in sleepers.items():
            self._asked[device] = now
            chosen = plan(await network_section(db, device), sections)
            if chosen is None:
                log.info("no online agent shares a network with a sleeping device", extra={
                    "device_id": device, "run_id": run["id"]})
                continue
            request = WakeRequest(target_device=device, macs=chosen.macs, broadcasts=chosen.broadcasts,
                                  reason=f"task run {run['id']}")
            try:
                await relays[chosen.relay].send(request)
            except (ConnectionError, RuntimeError) as exc:
                log.warning("wake request not sent", extra={"relay": chosen.relay, "error": str(exc)})
                continue
            sent += 1
            await audit.append(db, "server", "device.wake.requested", device, {
                "relay": chosen.relay, "macs": chosen.macs, "broadcasts": chosen.broadcasts, "run_id": run["id"],
                "task_id": run["task_id"], "starts_at": run["not_before"], "request_id": request.id})
        return sent

    async def on_result(self, conn: AgentConnection, result: WakeResult) -> None:
        """The relay's report, audited as its own (what it says it sent and refused)."""
        await audit.append(self.server.db, f"device:{conn.device_id}", "device.wake.relayed", result.target_device,
                           {"sent": result.sent, "refused": result.refused, "request_id": result.in_reply_to})


#: The server's waker (on the console app; tests adjust its lead time there).
WAKER: web.AppKey[Waker] = web.AppKey("helpline_waker", Waker)


def setup(server: HelplineServer) -> Waker:
    """Make the waker and take relays' answers; the task scheduler drives its :meth:`Waker.tick`."""
    waker = Waker(server)
    server.console_app[WAKER] = waker
    server.agent_handlers.register(WakeResult, waker.on_result)
    return waker
