"""Agents and the console on one port (``single_port``), routed by the TLS server name (server/net/sni.py).

Real TLS on 127.0.0.1: a real ``helpline agent`` process enrolls and connects through the one port,
Debian's Chromium signs in to the console on the same port, and the refusals happen where the design
says — a client without a certificate under the agent name in the handshake, TLS 1.2 on either name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agent.config import AgentConfig
from agent.state import AgentState
from certs import tls
from certs.pki import init_pki
from server import devices
from server.app import HelplineServer
from tests.connect_proxy import ConnectProxy
from tests.harness import console_url, enroll_agent, new_token, running_agent, running_server, wait_until
from tests.procs import free_port, helpline, spawn
from tests.test_accounts_support import client, login, make_user
from tests.test_console_support import console_browser

AGENT_NAME = "agents.localhost"


@contextlib.asynccontextmanager
async def one_port_server(tmp_path: Path, **overrides: Any) -> AsyncIterator[HelplineServer]:
    """A server whose certificate carries the agent name, serving agents and the console on one free port."""
    init_pki(tmp_path / "srv" / "pki", ["localhost", AGENT_NAME, "127.0.0.1"])
    async with running_server(tmp_path / "srv", single_port=free_port(), **overrides) as server:
        yield server


def _client(server: HelplineServer, state: AgentState | None = None, *, name: str | None = None,
            tls12: bool = False) -> ssl.SSLContext:
    """A verifying client context: the device certificate when ``state`` is given, SNI ``name`` if given."""
    cert, key = (state.cert_path, state.key_path) if state is not None else (None, None)
    ctx = tls.agent_client_context(server.pki.ca_pem, cert, key, server_name=name)
    if tls12:
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def _get(server: HelplineServer, ctx: ssl.SSLContext, path: str) -> tuple[int, bytes]:
    """``GET path`` on the one port with ``ctx`` (its SNI decides the route); status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.console_port, ssl=ctx,
                                                   server_hostname="localhost")
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost:{server.console_port}\r\nConnection: close\r\n\r\n"
                     .encode())
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 15)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _refused(server: HelplineServer, ctx: ssl.SSLContext) -> BaseException:
    """The error a request on the one port with ``ctx`` ends in (it must not be answered). Blocking: a plain
    ssl socket reports the server's alert, which asyncio's streams turn into a bare end of stream."""
    try:
        with socket.create_connection(("127.0.0.1", server.console_port), timeout=15) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as conn:
            conn.sendall(b"GET /api/v1/enroll/ca.pem HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            reply = conn.recv(100)
    except (ssl.SSLError, ConnectionError) as exc:
        return exc
    if reply:
        raise AssertionError(f"answered: {reply!r}")
    return ConnectionResetError("closed without an answer")


async def _inventory_hostname(server: HelplineServer, device_id: str) -> str | None:
    row = await server.db.fetchone("SELECT hostname FROM devices WHERE id = ?", (device_id,))
    return str(row["hostname"]) if row and row["hostname"] else None


async def test_a_real_agent_and_chromium_share_the_one_port(tmp_path: Path) -> None:
    """`helpline agent enroll` and `agent run` reach the server through its one port (the agent name learnt at
    enrollment), its inventory is in the API, and Chromium signs in to the console on the same port."""
    async with one_port_server(tmp_path) as server:
        port = server.config.single_port
        assert server.agent_port == server.console_port == port and console_url(server).endswith(f":{port}")
        admin = await make_user(server, "root", "admin")
        technician = await make_user(server, "tech", "admin")  # a TOTP code signs in once: one account each
        token = await new_token(server)
        state_dir = tmp_path / "agent"
        result = await asyncio.to_thread(helpline, "agent", "enroll", console_url(server), token, "--ca-sha256",
                                         server.ca.fingerprint_sha256, "--state", str(state_dir))
        assert "enrolled as device" in result.stdout, result.stdout
        state = AgentState(state_dir)
        assert state.agent_url == f"wss://localhost:{port}/agent" and state.agent_server_name == AGENT_NAME
        log = tmp_path / "agent.log"
        with spawn("agent", "run", "--state", str(state_dir), "--log-format", "json", log=log,
                   env={"HELPLINE_BACKOFF_CAP_S": "1"}):
            async def online() -> bool:
                row = await devices.get(server.db, state.device_id)
                return bool(row and row["online"])

            async def inventoried() -> bool:
                return await _inventory_hostname(server, state.device_id) is not None

            await wait_until(online, timeout=60, what=f"the agent online through the one port ({log})")
            await wait_until(inventoried, timeout=60, what="the agent's first inventory")
            hostname = await _inventory_hostname(server, state.device_id)
            assert hostname
            async with client(server) as http:
                assert (await login(http, admin)).status == 200
                async with http.get(f"/api/v1/devices/{state.device_id}") as resp:
                    assert resp.status == 200 and hostname in json.dumps(await resp.json())
            async with console_browser(server) as console:
                assert console.base == f"https://localhost:{port}"
                await console.login(technician)
                link = console.page.locator("#device-rows a.hostname", has_text=hostname)
                await link.wait_for(timeout=20_000)
                assert console.csp_violations() == []
        assert server.gate is not None
        assert server.gate.events.total["agent_handshake_failed"] == 0


async def test_each_name_reaches_only_its_own_application(tmp_path: Path) -> None:
    """Under the agent name only the agent application answers (a device certificate required); under any other
    name only the console's, with no certificate asked for: an agent route over the console name is 404 (no
    client identity there), a console route over the agent name is 404 too."""
    async with one_port_server(tmp_path) as server:
        state = await enroll_agent(server, tmp_path / "agent")
        assert state.agent_server_name == AGENT_NAME
        device = _client(server, state, name=AGENT_NAME)
        async with connect(f"wss://localhost:{server.agent_port}/agent", ssl=device, open_timeout=15):
            pass  # the control channel opens: the route works with a device certificate
        status, body = await _get(server, device, "/api/v1/enroll/ca.pem")
        assert status == 404, (status, body[:200])
        status, body = await _get(server, _client(server), "/api/v1/enroll/ca.pem")
        assert status == 200 and b"BEGIN CERTIFICATE" in body
        # The device's certificate presented under the console name: the console never asks for it and has no
        # agent route, so the control channel cannot open there.
        with pytest.raises(InvalidStatus) as wrong_route:
            async with connect(f"wss://localhost:{server.console_port}/agent",
                               ssl=_client(server, state), open_timeout=15):
                pass
        assert wrong_route.value.response.status_code == 404


async def test_handshake_refusals_on_the_one_port(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A client without a certificate under the agent name fails in the TLS handshake (the agent route's, for
    want of a certificate); TLS 1.2 is refused under both names; plain HTTP is closed without an answer."""
    caplog.set_level(logging.INFO, logger="server.net.guard")
    async with one_port_server(tmp_path) as server:
        assert server.gate is not None
        counts = server.gate.events.total
        await asyncio.to_thread(_refused, server, _client(server, name=AGENT_NAME))
        await wait_until(lambda: counts["agent_handshake_failed"] >= 1, what="the agent route's failed handshake")
        reasons = [str(getattr(r, "last", "")) for r in caplog.records if getattr(r, "agent_handshake_failed", 0)]
        assert any("PEER_DID_NOT_RETURN_A_CERTIFICATE" in reason for reason in reasons), reasons
        state = await enroll_agent(server, tmp_path / "agent")
        for name in (AGENT_NAME, None):
            error = await asyncio.to_thread(_refused, server, _client(server, state if name else None, name=name,
                                                                     tls12=True))
            assert isinstance(error, ssl.SSLError), repr(error)
        await wait_until(lambda: counts["console_handshake_failed"] >= 1, what="the console route's failed handshake")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.console_port)
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):  # reset, or closed: never an answer
            assert await asyncio.wait_for(reader.read(), 15) == b""
        writer.close()
        assert counts["single_port_handshake_failed"] >= 1


def _dribbled_get(port: int, ctx: ssl.SSLContext, name: str, path: str, pieces: int) -> bytes:
    """A TLS client that sends its ClientHello in ``pieces`` parts 50 ms apart (a slow link), then ``GET path``;
    the response's status line. Blocking: run it in a thread."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        conn = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
        with pytest.raises(ssl.SSLWantReadError):
            conn.do_handshake()
        hello = outgoing.read()
        step = -(-len(hello) // pieces)
        for at in range(0, len(hello), step):
            sock.sendall(hello[at:at + step])
            time.sleep(0.05)  # the stimulus: a ClientHello arriving in parts
        while True:
            try:
                conn.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    sock.sendall(outgoing.read())
                data = sock.recv(65536)
                if not data:
                    raise ConnectionResetError("closed during the handshake") from None
                incoming.write(data)
        conn.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        sock.sendall(outgoing.read())
        reply = b""
        while b"\r\n" not in reply:
            try:
                reply += conn.read(65536)
            except ssl.SSLWantReadError:
                data = sock.recv(65536)
                if not data:
                    break
                incoming.write(data)
        return reply.split(b"\r\n", 1)[0]


async def test_a_client_hello_in_parts_is_routed_and_a_half_one_is_closed(tmp_path: Path) -> None:
    """A ClientHello arriving in parts is read whole before routing (both routes); a connection that closes
    halfway through its ClientHello is let go at once, not held until the handshake timeout."""
    async with one_port_server(tmp_path, tls_handshake_timeout_s=30.0, header_timeout_s=40.0) as server:
        state = await enroll_agent(server, tmp_path / "agent")
        port = server.console_port
        console = await asyncio.to_thread(_dribbled_get, port, _client(server), "localhost", "/api/v1/enroll/ca.pem", 7)
        assert console == b"HTTP/1.1 200 OK", console
        agent = await asyncio.to_thread(_dribbled_get, port, _client(server, state), AGENT_NAME,
                                        "/api/v1/enroll/ca.pem", 5)
        assert agent.startswith(b"HTTP/1.1 404"), agent

        def half_hello() -> float:
            ctx = _client(server)
            conn = ctx.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname=AGENT_NAME)
            with pytest.raises(ssl.SSLWantReadError):
                conn.do_handshake()
            hello = outgoing.read()
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                sock.sendall(hello[:len(hello) // 2])
                sock.shutdown(socket.SHUT_WR)
                started = time.monotonic()
                with contextlib.suppress(ConnectionResetError):  # closed or reset: either lets it go
                    assert sock.recv(100) == b""
                return time.monotonic() - started

        assert await asyncio.to_thread(half_hello) < 5.0  # the handshake timeout is 30 s


async def test_the_agent_name_goes_through_a_connect_proxy(tmp_path: Path) -> None:
    """Through a CONNECT proxy the agent asks for the server's address and sends the agent name inside the tunnel:
    the control channel comes up on the agent route (and the proxy saw nothing but TLS)."""
    proxy = ConnectProxy()
    await proxy.start()
    try:
        async with one_port_server(tmp_path) as server:
            state = await enroll_agent(server, tmp_path / "agent")
            config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, proxy=proxy.url)
            async with running_agent(state, config) as agent:
                await asyncio.wait_for(agent.client.ready.wait(), 30)
            assert proxy.tunnels and {(t.host, t.port) for t in proxy.tunnels} == {("localhost", server.agent_port)}
            assert all(t.first_bytes[:1] == b"\x16" for t in proxy.tunnels)  # TLS handshake records only
    finally:
        await proxy.stop()


async def test_each_context_refuses_the_other_routes_name(tmp_path: Path) -> None:
    """Defence in depth behind the routing: the console context refuses a handshake under the agent name, and the
    agent context one under any other name, even with a valid device certificate (OpenSSL's reading must agree)."""
    async with one_port_server(tmp_path) as server:
        state = await enroll_agent(server, tmp_path / "agent")
    agent_ctx, console_ctx = tls.single_port_contexts(server.pki.ca_pem, server.pki.server_pem, server.pki.server_key,
                                                      AGENT_NAME)

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"served\n")
        await writer.drain()
        writer.close()

    for ctx, name, device, served in ((console_ctx, "localhost", False, True), (console_ctx, AGENT_NAME, False, False),
                                      (agent_ctx, AGENT_NAME, True, True), (agent_ctx, "localhost", True, False)):
        listener = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=ctx)
        port = listener.sockets[0].getsockname()[1]
        client_ctx = _client(server, state if device else None, name=name)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
            line = await asyncio.wait_for(reader.readline(), 15)
            writer.close()
        except (ssl.SSLError, ConnectionError):
            line = b""
        finally:
            listener.close()
        assert (line == b"served\n") is served, (name, device, line)


def test_the_server_refuses_a_certificate_without_the_agent_name(tmp_path: Path) -> None:
    """`helpline server --single-port` exits 1 naming the missing name and the command that adds it, when the
    server certificate does not carry agents.<public_host>."""
    data = tmp_path / "srv"
    init_pki(data / "pki", ["localhost", "127.0.0.1"])
    result = helpline("server", "--data", str(data), "--host", "127.0.0.1", "--public-host", "localhost",
                      "--single-port", str(free_port()), check=False, timeout=90)
    assert result.returncode == 1, result.stderr
    assert "agents.localhost" in result.stderr and "--server-name agents.localhost" in result.stderr
