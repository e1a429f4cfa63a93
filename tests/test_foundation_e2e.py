"""Foundation end to end: enrollment, mTLS control channel, revocation, renewal, reconnects."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import connect

from agent.control_client import AgentRevoked
from agent.enroll import EnrollmentFailed, enroll
from certs import tls
from certs.pki import (
    CertificateAuthority,
    build_csr,
    certificate_serial_hex,
    generate_device_key,
    init_pki,
    load_certificate,
    write_private_key,
)
from protocol.control import CloseCode
from server import audit, devices
from tests.harness import console_url, enroll_agent, new_token, running_agent, running_server, wait_until


async def _online(server, device_id: str) -> bool:
    row = await devices.get(server.db, device_id)
    return bool(row and row["online"])


async def test_enrolled_agent_connects_and_goes_online(tmp_path: Path) -> None:
    """An enrolled agent completes the mTLS handshake, says hello and is marked online; offline after stop."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        assert (state.key_path.stat().st_mode & 0o777) == 0o600
        async with running_agent(state) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            await wait_until(lambda: _online(server, state.device_id), what="device online")
            row = await devices.get(server.db, state.device_id)
            assert row["group_name"] == "lab" and row["last_seen"] is not None
        await wait_until(lambda: server.connections.get(state.device_id) is None, what="connection gone")
        # The node forgets the connection first, then writes the device offline (a statement later).
        async def offline() -> bool:
            return not await _online(server, state.device_id)

        await wait_until(offline, timeout=10, what="device offline in the database")


async def test_token_reuse_expired_wrong_and_bad_csr_are_refused(tmp_path: Path) -> None:
    """Token reuse, expiry, a wrong token and malformed/wrong-key CSRs get clear 4xx errors, all audited."""
    import urllib.error
    import urllib.request

    async with running_server(tmp_path / "srv") as server:
        fingerprint = server.ca.fingerprint_sha256
        token = await new_token(server)
        await asyncio.to_thread(enroll, console_url(server), token, fingerprint, _state(tmp_path / "a1"))
        with pytest.raises(EnrollmentFailed) as reused:
            await asyncio.to_thread(enroll, console_url(server), token, fingerprint, _state(tmp_path / "a2"))
        assert reused.value.code == "token_used"
        expired = await new_token(server, ttl_s=-1)
        with pytest.raises(EnrollmentFailed) as exp:
            await asyncio.to_thread(enroll, console_url(server), expired, fingerprint, _state(tmp_path / "a3"))
        assert exp.value.code == "token_expired"
        with pytest.raises(EnrollmentFailed) as wrong:
            await asyncio.to_thread(enroll, console_url(server), token + "x", fingerprint, _state(tmp_path / "a4"))
        assert wrong.value.code == "invalid_token"

        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509 import CertificateSigningRequestBuilder, Name

        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        rsa_csr = CertificateSigningRequestBuilder().subject_name(Name([])).sign(rsa_key, hashes.SHA256())
        ctx = tls.agent_client_context(server.pki.ca_pem, None, None)

        def post(body: bytes) -> tuple[int, dict]:
            req = urllib.request.Request(f"{console_url(server)}/api/v1/enroll", data=body, method="POST")
            try:
                with urllib.request.urlopen(req, context=ctx) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        good_token = await new_token(server)
        for body, code in [
            (json.dumps({"token": good_token, "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"}).encode(), "bad_csr"),
            (json.dumps({"token": good_token,
                         "csr": rsa_csr.public_bytes(serialization.Encoding.PEM).decode()}).encode(), "bad_csr"),
            (b"{not json", "malformed"),
            (json.dumps({"token": 5}).encode(), "invalid"),
        ]:
            status, answer = await asyncio.to_thread(post, body)
            assert 400 <= status < 500 and answer["error"]["code"] == code, (status, answer)
        oversize = json.dumps({"token": good_token, "csr": "A" * 17_000}).encode()  # over the 16 KiB limit
        status, answer = await asyncio.to_thread(post, oversize)
        assert (status, answer["error"]["code"]) == (413, "too_large"), (status, answer)
        refusals = await audit.recent(server.db, action="device.enroll.refused")
        assert {json.loads(r["details"])["code"] for r in refusals} >= {"token_used", "token_expired",
                                                                         "invalid_token", "bad_csr"}
        # The failed CSRs did not burn the token: it still enrolls a device.
        await asyncio.to_thread(enroll, console_url(server), good_token, fingerprint, _state(tmp_path / "a5"))


def _state(path: Path):
    from agent.state import AgentState

    return AgentState(path)


async def test_pinned_fingerprint_mismatch_refuses_enrollment(tmp_path: Path) -> None:
    """An agent given the wrong CA fingerprint never sends its token."""
    from certs.errors import PinMismatchError

    async with running_server(tmp_path / "srv") as server:
        token = await new_token(server)
        with pytest.raises(PinMismatchError):
            await asyncio.to_thread(enroll, console_url(server), token, "ab" * 32, _state(tmp_path / "a"))
        row = await server.db.fetchone("SELECT uses_left FROM enrollment_tokens")
        assert row["uses_left"] == 1


def _client_ctx(ca: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    return tls.agent_client_context(ca, cert, key)


async def _try_connect(url: str, ctx: ssl.SSLContext) -> Exception | None:
    try:
        async with connect(url, ssl=ctx, open_timeout=5):
            return None
    except Exception as exc:
        return exc


async def test_handshake_rejections(tmp_path: Path) -> None:
    """No client cert, a cert under another root, an expired cert (each with its intermediate) and TLS 1.2
    are all refused."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        url = f"wss://localhost:{server.agent_port}/agent"
        # Sanity: the real certificate is accepted.
        assert await _try_connect(url, _client_ctx(state.ca_path, state.cert_path, state.key_path)) is None
        # No client certificate.
        assert await _try_connect(url, _client_ctx(state.ca_path, None, None)) is not None
        # Certificate from another CA (same device id).
        other = init_pki(tmp_path / "other", ["localhost"])
        other_ca = CertificateAuthority.load(other.directory)
        key = generate_device_key()
        cert = other_ca.sign_device_csr(build_csr(key), state.device_id, now=datetime.now(UTC))
        write_private_key(tmp_path / "o.key", key)
        (tmp_path / "o.pem").write_bytes(other_ca.chain_pem(cert))  # with its intermediate, as agents send it
        assert await _try_connect(url, _client_ctx(state.ca_path, tmp_path / "o.pem", tmp_path / "o.key")) is not None
        # Expired certificate from the right CA, registered as the device's current serial.
        key2 = generate_device_key()
        old = server.ca.sign_device_csr(build_csr(key2), state.device_id,
                                        now=datetime.now(UTC) - timedelta(days=60), lifetime=timedelta(days=30))
        write_private_key(tmp_path / "e.key", key2)
        (tmp_path / "e.pem").write_bytes(server.ca.chain_pem(old))
        await server.db.execute("UPDATE devices SET cert_serial = ? WHERE id = ?",
                                (certificate_serial_hex(old), state.device_id))
        assert await _try_connect(url, _client_ctx(state.ca_path, tmp_path / "e.pem", tmp_path / "e.key")) is not None
        # TLS 1.2 client with a valid certificate.
        ctx12 = _client_ctx(state.ca_path, state.cert_path, state.key_path)
        ctx12.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
        exc = await _try_connect(url, ctx12)
        assert isinstance(exc, ssl.SSLError | OSError), exc


async def test_revoked_device_closed_within_one_second_and_refused_after(tmp_path: Path) -> None:
    """Revoking (as the admin CLI does, through the database) closes the live channel < 1 s; the agent exits."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        async with running_agent(state) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            started = time.monotonic()
            assert await devices.revoke(server.db, state.device_id, actor="test")
            with pytest.raises(AgentRevoked):
                await asyncio.wait_for(asyncio.shield(agent.task), 5)
            elapsed = time.monotonic() - started
            assert elapsed < 1.0, f"revocation took {elapsed:.2f}s"
        # A new handshake is refused with 403 "revoked".
        exc = await _try_connect(f"wss://localhost:{server.agent_port}/agent",
                                 _client_ctx(state.ca_path, state.cert_path, state.key_path))
        assert isinstance(exc, websockets.exceptions.InvalidStatus) and exc.response.status_code == 403
        assert (await audit.recent(server.db, action="device.revoke"))[0]["target"] == state.device_id


async def test_agent_reconnects_after_server_restart(tmp_path: Path) -> None:
    """The agent survives a server restart without operator action."""
    async with running_server(tmp_path / "srv") as server:
        port_a, port_c = server.agent_port, server.console_port
        state = await enroll_agent(server, tmp_path / "agent")
    async with running_agent(state) as agent:
        for round_ in range(2):
            async with running_server(tmp_path / "srv", agent_port=port_a, console_port=port_c) as server:
                await wait_until(lambda: _online(server, state.device_id), timeout=15, what=f"online round {round_}")
                connections = agent.client.connections
            await wait_until(lambda: not agent.client.ready.is_set(), what="agent notices the server left")
        assert connections >= 2


async def test_renewal_replaces_certificate(tmp_path: Path) -> None:
    """At 2/3 of its life the agent renews: new key and cert on disk, new serial current, old refused."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        old_cert = load_certificate(state.cert_path)
        old_key = state.key_path.read_bytes()
        (tmp_path / "old.pem").write_bytes(state.cert_path.read_bytes())
        (tmp_path / "old.key").write_bytes(old_key)
        (tmp_path / "old.key").chmod(0o600)
        future = datetime.now(UTC) + timedelta(days=21)

        def setup(agent) -> None:
            agent.client.wall_clock = lambda: future

        async with running_agent(state, setup=setup) as agent:
            await wait_until(lambda: agent.client.connections >= 2 and agent.client.ready.is_set(), timeout=15,
                             what="reconnect with renewed certificate")
            new_cert = load_certificate(state.cert_path)
            assert new_cert.serial_number != old_cert.serial_number
            assert state.key_path.read_bytes() != old_key
            await wait_until(lambda: _current_serial_is(server, state.device_id, certificate_serial_hex(new_cert)),
                             what="new serial current")
        exc = await _try_connect(f"wss://localhost:{server.agent_port}/agent",
                                 _client_ctx(state.ca_path, tmp_path / "old.pem", tmp_path / "old.key"))
        assert isinstance(exc, websockets.exceptions.InvalidStatus) and exc.response.status_code == 403


async def _current_serial_is(server, device_id: str, serial: str) -> bool:
    row = await devices.get(server.db, device_id)
    return row is not None and row["cert_serial"] == serial


async def _raw_channel(server, state):
    ws = await connect(f"wss://localhost:{server.agent_port}/agent",
                       ssl=_client_ctx(state.ca_path, state.cert_path, state.key_path))
    await ws.send(json.dumps({"v": 1, "type": "hello", "id": "h1", "min_version": 1, "max_version": 1,
                              "agent_version": "raw", "device_id": state.device_id}))
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome"
    return ws


async def test_malformed_messages_get_errors_and_others_keep_being_served(tmp_path: Path) -> None:
    """Malformed, wrong-type, unknown-type and out-of-order messages get error replies; other agents unaffected."""
    async with running_server(tmp_path / "srv") as server:
        bad_state = await enroll_agent(server, tmp_path / "bad")
        good_state = await enroll_agent(server, tmp_path / "good")
        async with running_agent(good_state) as good:
            await asyncio.wait_for(good.client.ready.wait(), 10)
            ws = await _raw_channel(server, bad_state)
            cases = [
                ("{broken", "malformed"),
                (json.dumps({"v": 1, "type": "no.such", "id": "u1"}), "unknown_type"),
                (json.dumps({"v": 1, "type": "cert.renew.request", "id": "w1", "csr": 5}), "invalid"),
                (json.dumps({"v": 1, "type": "hello", "id": "o1", "min_version": 1, "max_version": 1,
                             "agent_version": "x", "device_id": bad_state.device_id}), "unexpected"),
                (json.dumps({"v": 1, "type": "welcome", "id": "o2", "version": 1, "server_version": "x",
                             "keepalive_s": 5}), "unexpected"),
                (json.dumps({"v": 1, "type": "cert.renew.request", "id": "c1", "csr": "garbage"}), "bad_csr"),
            ]
            for frame, code in cases:
                await ws.send(frame)
                reply = json.loads(await ws.recv())
                assert reply["type"] == "error" and reply["code"] == code, (frame, reply)
            # Still served: a ping gets a pong.
            await ws.send(json.dumps({"v": 1, "type": "ping", "id": "p1"}))
            assert json.loads(await ws.recv())["type"] == "pong"
            # Oversized frame: closed with 1009; the good agent stays connected.
            await ws.send("x" * (5 * 1024 * 1024))
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            assert good.client.ready.is_set() and server.connections.get(good_state.device_id) is not None
            row = await devices.get(server.db, bad_state.device_id)
            assert row["status"] == "active"


async def test_hello_with_foreign_device_id_is_refused(tmp_path: Path) -> None:
    """A device claiming another device's id in hello is closed as unauthorized."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        ws = await connect(f"wss://localhost:{server.agent_port}/agent",
                           ssl=_client_ctx(state.ca_path, state.cert_path, state.key_path))
        await ws.send(json.dumps({"v": 1, "type": "hello", "id": "h1", "min_version": 1, "max_version": 1,
                                  "agent_version": "x", "device_id": "someone-else"}))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "error" and reply["code"] == "unauthorized"
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == CloseCode.UNAUTHORIZED


async def test_audit_chain_detects_tampering(tmp_path: Path) -> None:
    """verify_chain passes on an intact log and names the first altered record."""
    async with running_server(tmp_path / "srv") as server:
        for i in range(5):
            await audit.append(server.db, "test", "thing.done", str(i), {"i": i})
        report = await audit.verify_chain(server.db)
        assert report.ok and report.records >= 5
        await server.db.execute("UPDATE audit_log SET details = '{\"i\":99}' WHERE seq = 3")
        report = await audit.verify_chain(server.db)
        assert not report.ok and report.first_bad_seq == 3
