"""A delegated node's side: the signer's answer is read whole over real TLS 1.3 (however it is split), checked
(valid now, permitting the node's names, with the extensions a node intermediate needs) before it is installed,
and renewal stops with one clear message once the intermediate has expired.

The root, the delegation and every certificate are real; the signer here is a small aiohttp TLS server on the
delegation's own signer certificate, so the test decides how its answer is cut into pieces.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from certs import tls
from certs.delegation import DelegationCA, SignerPaths, create_delegation, node_chain
from certs.errors import CertValidationError
from certs.node_link import SignerLink, check_chain, request_intermediate
from certs.pki import CertificateAuthority, RootCA, csr_public_key, pem_chain, write_certificate
from certs.signer_wire import MAX_RESPONSE_BYTES, PATH, IntermediateAnswer, IntermediateRequest
from server import issuer
from tests.procs import free_port


@dataclass
class Pki:
    root: RootCA
    delegation: DelegationCA
    signer: SignerPaths
    node_dir: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A root, its delegation (signer certificate for 127.0.0.1, nodes named localhost or *.example.org) and a
    node directory holding the root's certificate."""
    now = datetime.now(UTC)
    root = RootCA.create(now=now)
    delegation = create_delegation(root, tmp_path / "signer", signer_host="127.0.0.1",
                                   server_names=["localhost", "example.org"], passphrase=b"signer passphrase 123",
                                   now=now, lifetime=timedelta(days=30))
    (tmp_path / "node").mkdir(mode=0o700)
    write_certificate(tmp_path / "node" / "ca.pem", root.certificate)
    return Pki(root, delegation, SignerPaths(tmp_path / "signer"), tmp_path / "node")


def _intermediate(pki: Pki, key: ec.EllipticCurvePrivateKey, names: list[str],
                  now: datetime | None = None) -> list[x509.Certificate]:
    cert = pki.delegation.issue_node_intermediate(key.public_key(), "node-a", names, now=now or datetime.now(UTC),
                                                  lifetime=timedelta(minutes=5))
    return node_chain(cert, pki.delegation)


@asynccontextmanager
async def _signer(pki: Pki, send: Callable[[web.StreamResponse, bytes], Awaitable[None]]) -> AsyncIterator[str]:
    """A TLS 1.3 signer on the delegation's signer certificate answering with a real chain, written by ``send``."""

    async def answer(request: web.Request) -> web.StreamResponse:
        ask = msgspec.json.decode(await request.read(), type=IntermediateRequest)
        key_chain = node_chain(pki.delegation.issue_node_intermediate(
            csr_public_key(ask.csr.encode()), ask.node, ["localhost"], now=datetime.now(UTC),
            lifetime=timedelta(minutes=5)), pki.delegation)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await send(response, msgspec.json.encode(IntermediateAnswer(chain=pem_chain(key_chain).decode())))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post(PATH, answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port,
                      ssl_context=tls.console_listener_context(pki.signer.signer_pem, pki.signer.signer_key)).start()
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_an_answer_arriving_in_pieces_is_read_to_its_end(pki: Pki) -> None:
    """The answer's second half comes in a later TLS record: the node reads to the end of the body (reading
    'up to N bytes' returned only the first half, and renewals failed at random as 'malformed')."""

    async def in_two(response: web.StreamResponse, body: bytes) -> None:
        await response.write(body[:200])  # write() drains: the first half is on the wire
        await asyncio.sleep(0.3)  # the stimulus (not a synchronisation): the rest leaves in a later record
        await response.write(body[200:])

    key = ec.generate_private_key(ec.SECP256R1())
    async with _signer(pki, in_two) as url:
        chain = await request_intermediate(SignerLink(url, "node-a"), pki.node_dir, key, token="t")
    assert chain[0].public_key() == key.public_key() and chain[1] == pki.delegation.certificate


async def test_an_answer_over_the_limit_is_refused_however_it_is_split(pki: Pki) -> None:
    """More than MAX_RESPONSE_BYTES, sent in small pieces, is refused as too large (not cut and parsed)."""

    async def too_much(response: web.StreamResponse, body: bytes) -> None:
        for _ in range(MAX_RESPONSE_BYTES // 4096 + 2):
            await response.write(b" " * 4096)
        await response.write(body)

    async with _signer(pki, too_much) as url:
        with pytest.raises(CertValidationError, match="too large"):
            await request_intermediate(SignerLink(url, "node-a"), pki.node_dir,
                                       ec.generate_private_key(ec.SECP256R1()), token="t")


def test_check_chain_refuses_an_answer_the_node_cannot_serve_with(pki: Pki) -> None:
    """An intermediate not valid now, not permitting the node's current names, or lacking the basic or name
    constraints is refused with CertValidationError (never installed; never an uncaught ExtensionNotFound)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    chain = _intermediate(pki, key, ["localhost"], now)
    root = pki.root.certificate
    check_chain(chain, root, key.public_key(), now=now, names=["localhost"])  # the good answer
    with pytest.raises(CertValidationError, match=r"does not permit .*node-b\.example\.org"):
        check_chain(chain, root, key.public_key(), now=now, names=["localhost", "node-b.example.org"])
    for when in (now + timedelta(minutes=6), now - timedelta(hours=1)):
        with pytest.raises(CertValidationError, match="not valid now"):
            check_chain(chain, root, key.public_key(), now=when, names=["localhost"])

    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "bad")])
    base = (x509.CertificateBuilder().subject_name(name).issuer_name(pki.delegation.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(minutes=5)))
    other = ec.generate_private_key(ec.SECP256R1())
    for builder in (base, base.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)):
        bad = builder.sign(other, hashes.SHA256())
        with pytest.raises(CertValidationError, match="lacks an extension"):
            check_chain([bad, pki.delegation.certificate], root, key.public_key(), now=now)


async def test_renewal_stops_with_one_message_once_the_intermediate_has_expired(
        pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    """Past its intermediate's end the signer would refuse every proof: the renewal task logs once that the node
    needs a new token and returns (it retried about every second, at ERROR, for ever)."""
    key = ec.generate_private_key(ec.SECP256R1())
    chain = _intermediate(pki, key, ["localhost"])
    ca = CertificateAuthority(chain[0], key, pki.root.certificate, (chain[1],))
    server = SimpleNamespace(ca=ca, config=SimpleNamespace(pki_path=pki.node_dir))
    link = SignerLink(f"https://127.0.0.1:{free_port()}", "node-a")  # nothing listens there
    with caplog.at_level(logging.INFO, logger="server.issuer"):
        await asyncio.wait_for(issuer.keep_renewed(server, link,  # type: ignore[arg-type]
                                                   clock=lambda: ca.not_after + timedelta(seconds=1)), timeout=30)
    assert caplog.text.count("needs a new token (helpline certs signer add-node, then helpline certs join)") == 1
    assert "could not renew" not in caplog.text
