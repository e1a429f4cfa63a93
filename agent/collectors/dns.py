"""DNS resolvers and search domains: /etc/resolv.conf, and resolvectl behind systemd-resolved's stub.

When resolv.conf names only the local stub (127.0.0.53 / 127.0.0.54), the servers that answer
are systemd-resolved's upstreams, so ``resolvectl dns`` is asked for them (global first, then
per link, duplicates dropped); the stub itself is then still listed in ``stub``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agent.collectors._util import read_text, run_command

RESOLV_CONF = Path("/etc/resolv.conf")
STUBS = frozenset({"127.0.0.53", "127.0.0.54"})
MAX_SERVERS = 64
_RESOLVECTL_LINE = re.compile(r"^(?:Global|Link \d+ \(([^)]*)\)):\s*(.*)$")


def parse_resolv_conf(text: str) -> dict[str, list[str]]:
    """``nameserver``, ``search``/``domain`` (the last one wins, as in the resolver) and ``options``."""
    servers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        fields = line.split()
        if len(fields) < 2:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver" and values[0] not in servers:
            servers.append(values[0])
        elif key in ("search", "domain"):
            search = values[:MAX_SERVERS]
        elif key == "options":
            options.extend(values)
    return {"nameservers": servers[:MAX_SERVERS], "search": search, "options": options[:MAX_SERVERS]}


def parse_resolvectl_dns(text: str) -> list[str]:
    """``resolvectl dns`` lines (``Global: a b``, ``Link 2 (eth0): c``) → servers, first seen first."""
    servers: list[str] = []
    for line in text.splitlines():
        match = _RESOLVECTL_LINE.match(line.strip())
        if not match:
            continue
        for server in match.group(2).split():
            server = server.split("#", 1)[0]  # "1.1.1.1#cloudflare-dns.com" (DNS over TLS name)
            if server and server not in servers:
                servers.append(server)
    return servers[:MAX_SERVERS]


def collect_dns(resolv_conf: Path = RESOLV_CONF) -> dict[str, Any]:
    """Nameservers in resolver order, search domains and where they came from."""
    unavailable: dict[str, str] = {}
    text, reason = read_text(resolv_conf)
    parsed = parse_resolv_conf(text or "")
    if reason:
        unavailable["nameservers"] = reason
    servers, source, stub = parsed["nameservers"], "resolv.conf", None
    if servers and set(servers) <= STUBS:
        stub = servers[0]
        result = run_command(["resolvectl", "dns"])
        upstream = parse_resolvectl_dns(result.stdout) if result.stdout is not None and not result.reason else []
        if upstream:
            servers, source = upstream, "resolvectl"
        else:
            unavailable["upstream"] = result.reason or "resolvectl lists no DNS servers"
    return {"nameservers": servers, "search": parsed["search"], "stub": stub, "source": source,
            "unavailable": unavailable}
