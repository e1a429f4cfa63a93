"""IPv6 end to end: a server on ::1 with an IPv6 literal in its certificate; an agent enrolls and connects over it."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from agent.enroll import enroll
from agent.state import AgentState
from certs.pki import CertificateAuthority, init_pki
from server import devices
from tests.harness import new_token, running_agent, running_server, wait_until


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_enroll_and_connect_over_ipv6(tmp_path: Path) -> None:
    if not _has_ipv6_loopback():
        pytest.fail("this machine has no IPv6 loopback (::1); the IPv6 test needs it")
    init_pki(tmp_path / "srv" / "pki", ["::1"])
    async with running_server(tmp_path / "srv", host="::1", public_host="::1") as server:
        assert server.console_url == f"https://[::1]:{server.console_port}"
        token = await new_token(server)
        fingerprint = CertificateAuthority.load(server.config.pki_path).fingerprint_sha256
        state = AgentState(tmp_path / "agent")
        result = await asyncio.to_thread(enroll, server.console_url, token, fingerprint, state)
        assert result.agent_url == f"wss://[::1]:{server.agent_port}/agent"
        async with running_agent(state):
            async def online() -> bool:
                row = await devices.get(server.db, state.device_id)
                return bool(row and row["online"])

            await wait_until(online, timeout=20, what="device online over IPv6")
