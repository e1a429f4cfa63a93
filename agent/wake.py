"""Wake-on-LAN relay: broadcast a magic packet for a sleeping neighbour when the server asks.

The agent sends only to the broadcast address of a network one of its own interfaces is on
(a server cannot aim packets anywhere else through it), to at most :data:`MAX_PER_MINUTE`
requests a minute, and answers with what it sent and what it refused. Sending is plain
blocking UDP, done in a worker thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from protocol.wake import WakeRequest, WakeResult, magic_packet

if TYPE_CHECKING:
    from .control_client import AgentClient

log = logging.getLogger(__name__)

#: Wake requests honoured per minute; more are refused (a fleet's window wakes a few devices per relay).
MAX_PER_MINUTE = 30


def local_broadcasts() -> dict[str, str]:
    """Broadcast address → interface name, for every IPv4 network this machine is on (not loopback, not /31-32)."""
    import psutil

    found: dict[str, str] = {}
    for name, addresses in psutil.net_if_addrs().items():
        for address in addresses:
            if address.family != socket.AF_INET or not address.netmask:
                continue
            try:
                network = ipaddress.IPv4Interface(f"{address.address}/{address.netmask}").network
            except ValueError:
                continue
            if network.is_loopback or network.prefixlen >= 31:
                continue
            found[str(network.broadcast_address)] = name
    return found


def send_magic(macs: list[str], broadcasts: list[str], port: int, allowed: Mapping[str, str]) -> tuple[int, list[str]]:
    """Send one packet per (MAC, broadcast address) allowed; (packets sent, refusals with reasons)."""
    sent, refused = 0, []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        for broadcast in broadcasts:
            if broadcast not in allowed:
                refused.append(f"{broadcast}: not the broadcast address of a network this device is on")
                continue
            for mac in macs:
                try:
                    sock.sendto(magic_packet(mac), (broadcast, port))
                    sent += 1
                except (OSError, ValueError) as exc:
                    refused.append(f"{mac} via {broadcast}: {exc}"[:200])
    return sent, refused


@dataclass
class WakeRelay:
    """Answers ``wake.request``; the network lookup and the sender are seams for tests."""

    client: AgentClient
    networks: Callable[[], Mapping[str, str]] = local_broadcasts
    sender: Callable[[list[str], list[str], int, Mapping[str, str]], tuple[int, list[str]]] = send_magic
    clock: Callable[[], float] = time.monotonic
    _recent: deque[float] = field(default_factory=deque)

    def _allow(self) -> bool:
        now = self.clock()
        while self._recent and now - self._recent[0] > 60:
            self._recent.popleft()
        if len(self._recent) >= MAX_PER_MINUTE:
            return False
        self._recent.append(now)
        return True

    async def on_request(self, client: AgentClient, request: WakeRequest) -> None:
        if not self._allow():
            sent, refused = 0, [f"more than {MAX_PER_MINUTE} wake requests in a minute"]
        else:
            allowed = await asyncio.to_thread(self.networks)
            sent, refused = await asyncio.to_thread(self.sender, list(request.macs), list(request.broadcasts),
                                                    request.port, allowed)
        log.info("wake relayed", extra={"target_device": request.target_device, "sent": sent, "refused": refused})
        await client.send(WakeResult(in_reply_to=request.id, target_device=request.target_device, sent=sent,
                                     refused=refused[:16]))


def attach(relay: WakeRelay) -> None:
    relay.client.register(WakeRequest, relay.on_request)
