"""Recovery of an expired device certificate (issue 20): a real server on loopback, real TLS, real agent code.

The device's certificate is a real one of the node's intermediate, issued for the device's own key at a
time in the past so that it has already ended (the node's PKI is made 40 days ago, 60 days long, so the
intermediate issued it then and still issues now). The end-to-end test with processes and a
certificate that really runs out is tests/test_device_recovery_process.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from agent import recovery as agent_recovery
from agent.doctor import Doctor
from agent.state import AgentState
from certs import tls
from certs.delegation import create_delegation
from certs.pki import (
    CertificateAuthority,
    RootCA,
    build_csr,
    certificate_serial_hex,
    generate_device_key,
    init_pki,
    load_private_key,
    pem_chain,
)
from protocol.recovery import proof_bytes
from server import devices
from server import recovery as server_recovery
from server.app import HelplineServer
from server.errors import ApiError
from tests.harness import console_url, enroll_agent, running_agent, running_server, wait_until

NAMES = ["localhost", "127.0.0.1"]
PASSPHRASE = b"correct horse battery staple"


def _data(tmp_path: Path) -> Path:
    """A node whose intermediate was made 40 days ago (60 days long): it issued then and issues now."""
    data = tmp_path / "srv"
    init_pki(data / "pki", ["localhost", "127.0.0.1"], now=datetime.now(UTC) - timedelta(days=40))
    return data


def _key(state: AgentState) -> ec.EllipticCurvePrivateKey:
    key = load_private_key(state.key_path)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


async def _expire(server: HelplineServer, state: AgentState, *, days_ago: float, current: bool = True) -> str:
    """Give the device a certificate for its own key that ended ``days_ago`` days ago; ``current``: the registry
    records it as the device's current certificate (else the registry keeps the enrolled one). Its serial."""
    end = datetime.now(UTC) - timedelta(days=days_ago)
    cert = server.ca.sign_device_csr(build_csr(_key(state)), state.device_id, now=end - timedelta(days=1),
                                     lifetime=timedelta(days=1))
    assert cert.not_valid_after_utc <= end + timedelta(seconds=1)
    state.cert_path.write_bytes(server.ca.chain_pem(cert))
    state.record_certificate_validity(cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())
    serial = certificate_serial_hex(cert)
    if current:
        async with server.db.transaction() as tx:
            await tx.execute("UPDATE devices SET cert_serial = ?, cert_not_after = ? WHERE id = ?",
                             (serial, cert.not_valid_after_utc.timestamp(), state.device_id))
            await server_recovery.record_certificate(tx, state.device_id, cert)
    return serial


class Client:
    """The recovery requests by hand, over server-authenticated TLS verified against the pinned root."""

    def __init__(self, server: HelplineServer, state: AgentState) -> None:
        self.base = console_url(server)
        self.state = state
        self.ssl: ssl.SSLContext = tls.agent_client_context(state.ca_path, None, None)

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.post(self.base + path, json=body, ssl=self.ssl) as response:
            return response.status, json.loads(await response.read())

    async def nonce(self) -> str:
        status, body = await self.post("/api/v1/enroll/recover/nonce", {"device_id": self.state.device_id})
        assert status == 200, body
        return str(body["nonce"])

    def request(self, nonce: str, *, signer: ec.EllipticCurvePrivateKey | None = None) -> dict[str, Any]:
        csr = build_csr(generate_device_key()).decode()
        signature = (signer or _key(self.state)).sign(proof_bytes(nonce, self.state.device_id, csr),
                                                      ec.ECDSA(hashes.SHA256()))
        return {"device_id": self.state.device_id, "nonce": nonce, "chain": self.state.cert_path.read_text(),
                "csr": csr, "signature": base64.b64encode(signature).decode()}

    async def recover(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return await self.post("/api/v1/enroll/recover", body)


async def _audit(server: HelplineServer, action: str) -> list[dict[str, Any]]:
    rows = await server.db.fetchall("SELECT target, details FROM audit_log WHERE action = ? ORDER BY seq", (action,))
    return [{"target": r["target"], **json.loads(r["details"])} for r in rows]


async def test_agent_with_an_expired_certificate_recovers_and_connects(tmp_path: Path) -> None:
    """Its certificate ended 4 days ago: the agent proves its key before connecting, gets a certificate for a new
    key (pending, promoted at the first handshake) and comes online; the doctor and the audit say what happened."""
    async with running_server(_data(tmp_path)) as server:
        state = await enroll_agent(server, tmp_path / "agent")
        old_serial = await _expire(server, state, days_ago=4)
        old_key = state.key_path.read_bytes()
        line = Doctor(tmp_path / "none.toml").check_certificate(state).line()
        assert "certificate expired 4 days ago; recovery runs at the agent's next connection" in line
        async with running_agent(state) as agent:
            await wait_until(agent.client.ready.is_set, timeout=30, what="the agent connected")

            async def promoted() -> bool:
                row = await devices.get(server.db, state.device_id)
                return row is not None and row["online"] == 1 and row["cert_serial"] != old_serial
            await wait_until(promoted, timeout=30, what="the recovered certificate promoted at its handshake")
        assert state.key_path.read_bytes() != old_key  # a new key, made on the device
        cert = x509.load_pem_x509_certificate(state.cert_path.read_bytes())
        assert cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=10)
        assert cert.public_key() == _key(state).public_key()
        outcome = agent_recovery.Outcome.load(state)
        assert outcome is not None and outcome.ok
        [recovered] = await _audit(server, "device.recover")
        assert recovered["target"] == state.device_id and recovered["old_serial"] == old_serial
        assert 3.9 < recovered["expired_days"] < 4.1
        issued = await _audit(server, "device.cert.issue")
        assert issued[-1]["via"] == "recovery" and issued[-1]["serial"] == certificate_serial_hex(cert)
        assert not await _audit(server, "device.recover.refused")


async def test_a_key_renewed_away_is_refused(tmp_path: Path) -> None:
    """The expired certificate chains to the root and the proof is good, but the registry's current certificate is
    another one: an old key (a backup, a stolen disk image) gets nothing."""
    async with running_server(_data(tmp_path)) as server:
        state = await enroll_agent(server, tmp_path / "agent")
        await _expire(server, state, days_ago=2, current=False)
        client = Client(server, state)
        status, body = await client.recover(client.request(await client.nonce()))
        assert (status, body["error"]["code"]) == (403, "not_current")
        [refused] = await _audit(server, "device.recover.refused")
        assert refused["code"] == "not_current" and refused["target"] == state.device_id


async def test_revoked_past_grace_and_disabled_are_refused(tmp_path: Path) -> None:
    """A revoked device, a certificate ended 38 days ago (grace 30), and a server with recovery off: refused,
    and the agent keeps the refusal for the doctor instead of asking at every reconnect."""
    async with running_server(_data(tmp_path)) as server:
        state = await enroll_agent(server, tmp_path / "agent")
        await _expire(server, state, days_ago=38)
        client = Client(server, state)
        status, body = await client.recover(client.request(await client.nonce()))
        assert (status, body["error"]["code"]) == (403, "past_grace")
        await _expire(server, state, days_ago=2)
        await devices.revoke(server.db, state.device_id, actor="test")
        try:
            await agent_recovery.recover_if_expired(state, datetime.now(UTC))
        except agent_recovery.RecoveryFailed as exc:
            assert exc.code == "revoked" and exc.final
        else:
            raise AssertionError("a revoked device recovered")
        line = Doctor(tmp_path / "none.toml").check_certificate(state).line()
        assert "certificate expired 2 days ago; recovery refused at" in line and "(revoked)" in line
        codes = [r["code"] for r in await _audit(server, "device.recover.refused")]
        assert codes == ["past_grace", "revoked"]
    async with running_server(_data(tmp_path / "off"), device_recovery_days=0) as server:
        state = await enroll_agent(server, tmp_path / "agent-off")
        status, body = await Client(server, state).post("/api/v1/enroll/recover/nonce",
                                                        {"device_id": state.device_id})
        assert (status, body["error"]["code"]) == (403, "recovery_disabled")


async def test_replayed_nonce_and_forged_signature_are_refused(tmp_path: Path) -> None:
    """A nonce serves once (a replay of a successful request is refused, and so is one refused earlier);
    a signature by another key, or one over another CSR, is refused; a certificate not yet expired renews
    over the control channel instead; oversized bodies are refused before they are read; nonces asked by
    anyone neither block a device nor tell whether it exists."""
    async with running_server(_data(tmp_path)) as server:
        state = await enroll_agent(server, tmp_path / "agent")
        await _expire(server, state, days_ago=1)
        client = Client(server, state)
        forged = client.request(await client.nonce(), signer=generate_device_key())
        status, body = await client.recover(forged)
        assert (status, body["error"]["code"]) == (403, "bad_proof")
        swapped = client.request(await client.nonce())
        swapped["csr"] = build_csr(generate_device_key()).decode()  # signed over another CSR
        assert (await client.recover(swapped))[1]["error"]["code"] == "bad_proof"
        assert (await client.recover(client.request(swapped["nonce"])))[1]["error"]["code"] == "bad_nonce"
        good = client.request(await client.nonce())
        status, body = await client.recover(good)
        assert status == 200 and body["device_id"] == state.device_id
        status, body = await client.recover(good)
        assert (status, body["error"]["code"]) == (401, "bad_nonce")
        codes = [r["code"] for r in await _audit(server, "device.recover.refused")]
        assert codes == ["bad_proof", "bad_proof", "bad_nonce", "bad_nonce"]
        assert len(await _audit(server, "device.recover")) == 1
        status, body = await client.recover({**good, "chain": "x" * 40_000})
        assert status == 413

    async with running_server(_data(tmp_path / "fresh")) as server:
        state = await enroll_agent(server, tmp_path / "agent-fresh")
        client = Client(server, state)
        status, body = await client.recover(client.request(await client.nonce()))
        assert (status, body["error"]["code"]) == (409, "not_expired")
        # A device whose clock runs a month ahead thinks its certificate ended: told otherwise, it just connects.
        assert not await agent_recovery.recover_if_expired(state, datetime.now(UTC) + timedelta(days=31))
        # Another device's expired certificate, proven with that device's key, does not recover this one.
        other = await enroll_agent(server, tmp_path / "agent-other")
        await _expire(server, other, days_ago=1)
        # Review finding 3: anyone knowing a device id may ask nonces for it (a cap of 5 used to block the real
        # device), and an unknown id gets one too (a 404 told which ids exist); the device still recovers.
        for _ in range(6):
            await client.post("/api/v1/enroll/recover/nonce", {"device_id": other.device_id})
        status, answer = await client.post("/api/v1/enroll/recover/nonce", {"device_id": "no-such-device"})
        assert status == 200 and len(answer["nonce"]) == 64
        owner = Client(server, other)
        status, answer = await owner.recover(owner.request(await owner.nonce()))
        assert status == 200, answer
        client = Client(server, state)
        body = Client(server, other).request(await client.nonce(), signer=_key(other))
        status, answer = await client.recover({**body, "device_id": state.device_id})
        assert (status, answer["error"]["code"]) == (403, "device_mismatch")


def test_a_delegated_nodes_chain_waives_only_the_leaf_and_its_intermediate(tmp_path: Path) -> None:
    """Leaf, 48 h node intermediate, delegation, root: both lower ones long expired is fine; the delegation
    expired is not (nothing above the leaf's issuer is waived); a chain without its intermediate is refused."""
    now = datetime.now(UTC)
    root = RootCA.create(now=now - timedelta(days=400))

    def device_chain(delegation_start: datetime, delegation_days: int) -> tuple[str, str]:
        delegation = create_delegation(root, tmp_path / f"signer-{delegation_days}", signer_host="signer.internal",
                                       server_names=NAMES, passphrase=PASSPHRASE, now=delegation_start,
                                       lifetime=timedelta(days=delegation_days), force=True)
        node_key = ec.generate_private_key(ec.SECP256R1())
        issued_at = now - timedelta(days=5)
        node = CertificateAuthority(delegation.issue_node_intermediate(node_key.public_key(), "node-a", NAMES,
                                                                       now=issued_at),
                                    node_key, root.certificate, (delegation.certificate,))
        leaf = node.sign_device_csr(build_csr(generate_device_key()), "dev-1", now=issued_at)
        return node.chain_pem(leaf).decode(), pem_chain([leaf]).decode()

    chain, alone = device_chain(now - timedelta(days=100), 365)
    leaf = server_recovery.expired_leaf(chain, root.certificate, "dev-1", now)
    assert leaf.not_valid_after_utc < now - timedelta(days=2)
    with pytest.raises(ApiError, match="issuing chain"):
        server_recovery.expired_leaf(alone, root.certificate, "dev-1", now)
    with pytest.raises(ApiError, match="does not name this device"):
        server_recovery.expired_leaf(chain, root.certificate, "dev-2", now)
    expired_delegation, _ = device_chain(now - timedelta(days=10), 7)
    with pytest.raises(ApiError, match="not valid now"):
        server_recovery.expired_leaf(expired_delegation, root.certificate, "dev-1", now)


async def test_a_corrupt_certificate_file_is_a_final_refusal_not_a_crash(tmp_path: Path) -> None:
    """device.pem unreadable and no validity recorded: RecoveryFailed (which the reconnect loop backs off from),
    not the ValueError that used to end the loop."""
    state = AgentState(tmp_path / "agent")
    state.ensure_dir()
    state.save_info({"device_id": "dev-1", "console_url": "https://127.0.0.1:1"})
    state.cert_path.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(agent_recovery.RecoveryFailed) as caught:
        await agent_recovery.recover_if_expired(state, datetime.now(UTC))
    assert caught.value.code == "bad_certificate" and caught.value.final


def _forge(genuine: x509.Certificate, old: CertificateAuthority, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """The genuine leaf's subject, serial and extensions, for ``key``, signed by an OLD intermediate's key
    (a disk image, a backup) and ending inside that intermediate's life, as a forger would make it."""
    end = old.certificate.not_valid_after_utc - timedelta(hours=1)
    builder = (x509.CertificateBuilder().subject_name(genuine.subject).issuer_name(old.certificate.subject)
               .public_key(key.public_key()).serial_number(genuine.serial_number)
               .not_valid_before(end - timedelta(days=1)).not_valid_after(end))
    for ext in genuine.extensions:
        value: x509.ExtensionType = ext.value
        if isinstance(value, x509.AuthorityKeyIdentifier):
            value = x509.AuthorityKeyIdentifier.from_issuer_public_key(old.certificate.public_key())  # type: ignore[arg-type]
        elif isinstance(value, x509.SubjectKeyIdentifier):
            value = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = builder.add_extension(value, critical=ext.critical)
    return builder.sign(old._key, hashes.SHA256())


async def test_a_leaf_forged_under_an_old_intermediate_with_the_current_serial_is_refused(tmp_path: Path) -> None:
    """Review finding 1: the issuer's validity is waived and serials are in logs, so a leaf carrying the device's
    current serial, for the forger's key, signed by an intermediate that ended 22 days ago whose key leaked, passes
    the chain and proof checks; the registry's hash of the certificate really issued refuses it."""
    data = tmp_path / "srv"
    init_pki(data / "pki", NAMES, now=datetime.now(UTC) - timedelta(days=40), root_out=tmp_path / "root",
             passphrase=PASSPHRASE)
    root = RootCA.load(tmp_path / "root", PASSPHRASE)
    old = root.new_intermediate(NAMES, now=datetime.now(UTC) - timedelta(days=25), lifetime=timedelta(days=3))
    async with running_server(data) as server:
        state = await enroll_agent(server, tmp_path / "agent")
        await _expire(server, state, days_ago=1)
        genuine = x509.load_pem_x509_certificate(state.cert_path.read_bytes())
        forger = generate_device_key()
        forged = _forge(genuine, old, forger)
        assert certificate_serial_hex(forged) == certificate_serial_hex(genuine)
        client = Client(server, state)
        body = client.request(await client.nonce(), signer=forger)
        body["chain"] = pem_chain([forged, old.certificate]).decode()
        server_recovery.expired_leaf(body["chain"], server.ca.root, state.device_id, datetime.now(UTC))  # passes
        status, answer = await client.recover(body)
        assert (status, answer["error"]["code"]) == (403, "not_current"), answer
        assert not await _audit(server, "device.recover")
        # The genuine expired certificate, proven with the device's key, still recovers.
        status, answer = await client.recover(client.request(await client.nonce()))
        assert status == 200, answer


async def test_a_recovery_body_sent_in_slow_pieces_is_read_whole(tmp_path: Path) -> None:
    """Review finding 9b: the body was read with one ``read(n)``, which returns what is buffered: the first
    half of a ~17 KB recovery request was decoded alone (400). Now the server waits for the rest: no answer to
    half a body, and the whole one gets to the nonce check (401 bad_nonce: the nonce is made up)."""
    async with running_server(_data(tmp_path)) as server:
        state = await enroll_agent(server, tmp_path / "agent")
        await _expire(server, state, days_ago=1)
        client = Client(server, state)
        body = client.request("0" * 64)
        body["chain"] += " " * (16_000 - len(body["chain"]))  # ~17 KB in all
        raw = json.dumps(body).encode()
        target = urlsplit(client.base)
        reader, writer = await asyncio.open_connection(target.hostname, target.port, ssl=client.ssl,
                                                       server_hostname="localhost")
        try:
            writer.write(f"POST /api/v1/enroll/recover HTTP/1.1\r\nHost: {target.netloc}\r\nContent-Type: "
                         f"application/json\r\nContent-Length: {len(raw)}\r\nConnection: close\r\n\r\n".encode()
                         + raw[:len(raw) // 2])
            await writer.drain()
            with pytest.raises(TimeoutError):  # the old code answered the half body at once
                await asyncio.wait_for(reader.read(1), timeout=3)
            writer.write(raw[len(raw) // 2:])
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), timeout=30)
        finally:
            writer.close()
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401"), head
        assert json.loads(payload)["error"]["code"] == "bad_nonce"
