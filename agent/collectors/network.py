"""Network interfaces: MAC, IPv4/IPv6 addresses, link speed, state and which carries the default route."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import psutil

from agent.collectors._util import read_text

PROC_ROUTE = Path("/proc/net/route")
PROC_IPV6_ROUTE = Path("/proc/net/ipv6_route")
_RTF_UP = 0x1
_RTF_GATEWAY = 0x2


def _le_hex_ipv4(value: str) -> str:
    """/proc/net/route stores addresses as little-endian hex: ``010200C0`` → ``192.0.2.1``."""
    return socket.inet_ntoa(int(value, 16).to_bytes(4, "little"))


def parse_proc_net_route(text: str) -> dict[str, str | None]:
    """Interfaces holding an IPv4 default route (destination and mask 0, route up) → gateway or None."""
    defaults: dict[str, str | None] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, dest, gateway, flags, mask = fields[0], fields[1], fields[2], fields[3], fields[7]
        try:
            if int(dest, 16) != 0 or int(mask, 16) != 0 or not int(flags, 16) & _RTF_UP:
                continue
            defaults.setdefault(iface, _le_hex_ipv4(gateway) if int(flags, 16) & _RTF_GATEWAY else None)
        except ValueError:
            continue
    return defaults


def parse_proc_ipv6_route(text: str) -> set[str]:
    """Interfaces holding an IPv6 default route (``::/0``, not the loopback's unreachable entry)."""
    defaults = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 10:
            continue
        dest, prefix, flags, iface = fields[0], fields[1], fields[8], fields[9]
        try:
            if int(dest, 16) == 0 and int(prefix, 16) == 0 and int(flags, 16) & _RTF_UP and iface != "lo":
                defaults.add(iface)
        except ValueError:
            continue
    return defaults


def collect_network() -> dict[str, Any]:
    """One entry per interface, sorted by name, plus the IPv4 default gateway."""
    unavailable: dict[str, str] = {}
    route_text, reason = read_text(PROC_ROUTE)
    v4_defaults = parse_proc_net_route(route_text) if route_text else {}
    if reason and PROC_ROUTE.exists():
        unavailable["is_default_route"] = reason
    v6_text, _ = read_text(PROC_IPV6_ROUTE)
    v6_defaults = parse_proc_ipv6_route(v6_text) if v6_text else set()
    addrs = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    interfaces: list[dict[str, Any]] = []
    for name in sorted(set(addrs) | set(stats)):
        mac: str | None = None
        ipv4: list[dict[str, str | None]] = []
        ipv6: list[dict[str, str | None]] = []
        for addr in addrs.get(name, []):
            if addr.family == psutil.AF_LINK:
                mac = addr.address.lower()
            elif addr.family == socket.AF_INET:
                ipv4.append({"address": addr.address, "netmask": addr.netmask})
            elif addr.family == socket.AF_INET6:
                ipv6.append({"address": addr.address.split("%", 1)[0], "netmask": addr.netmask})
        stat = stats.get(name)
        speed = stat.speed if stat is not None and stat.speed > 0 else None
        if speed is None:
            unavailable[f"{name}.speed_mbps"] = "the driver reports no link speed"
        if mac is None:
            unavailable[f"{name}.mac"] = "no link-layer address"
        interfaces.append(
            {
                "name": name,
                "mac": mac,
                "ipv4": ipv4,
                "ipv6": ipv6,
                "speed_mbps": speed,
                "mtu": stat.mtu if stat is not None else None,
                "is_up": bool(stat.isup) if stat is not None else None,
                "is_default_route": name in v4_defaults or name in v6_defaults,
            }
        )
    gateways = [gw for gw in v4_defaults.values() if gw]
    return {"interfaces": interfaces, "default_gateway": gateways[0] if gateways else None, "unavailable": unavailable}
