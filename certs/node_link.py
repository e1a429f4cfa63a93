"""A server node's side of the delegation: ask the signer for a new intermediate and install it.

The node generates the intermediate's key itself and sends a CSR (:mod:`certs.signer_wire`),
proving the request with its current intermediate's key or an enrolment token. It checks the
answer (certifies its new key, leads through the delegation to the pinned root, is a CA of path
length 0, valid now, permitting the names its current intermediate did) before writing anything,
then writes the intermediate, its key, a new server certificate (for the names the intermediate
permits) and its key together, atomically.

``signer.json`` in the node's PKI directory says where the signer is and under which node name;
its presence is what makes the server renew by itself (:mod:`server.issuer`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from certs import tls
from certs.bus_renewal import BusFiles, check_bus_answer
from certs.delegation import permits
from certs.errors import CertError, CertValidationError
from certs.pki import (
    CLOCK_SKEW,
    CertificateAuthority,
    PkiPaths,
    as_utc,
    build_csr,
    load_certificate,
    pem_chain,
    private_key_pem,
)
from certs.signer_wire import MAX_RESPONSE_BYTES, PATH, IntermediateAnswer, IntermediateRequest, sign_proof
from common.bodies import read_capped
from common.files import atomic_write, atomic_write_all

#: When the node renews, as a fraction of its intermediate's life (half: a failed renewal has the other half).
RENEW_FRACTION = 0.5
REQUEST_TIMEOUT_S = 30.0


class SignerRefused(CertError):
    """The signer answered with an error (not on the allow-list, bad proof …); the message says which."""


@dataclass(frozen=True)
class SignerLink:
    """``signer.json``: the signer's URL (``https://host:port``), this node's name on its allow-list."""

    url: str
    node: str
    renew_fraction: float = RENEW_FRACTION
    #: Renew the node's bus certificate with the intermediate (``certs join --bus``; certs/bus_renewal.py).
    bus: bool = False

    @staticmethod
    def path(pki_dir: Path) -> Path:
        return Path(pki_dir) / "signer.json"

    @classmethod
    def load(cls, pki_dir: Path) -> SignerLink | None:
        """The node's link, or None for a node whose intermediate comes from the root directly."""
        path = cls.path(pki_dir)
        if not path.exists():
            return None
        try:
            link = cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise CertError(f"{path}: not a signer link ({exc})") from exc
        if not 0.05 <= link.renew_fraction <= 0.9:
            raise CertError(f"{path}: renew_fraction must be between 0.05 and 0.9")
        return link

    def save(self, pki_dir: Path) -> None:
        atomic_write(self.path(pki_dir), json.dumps(asdict(self), indent=2), 0o644)


def renew_at(intermediate: x509.Certificate, fraction: float = RENEW_FRACTION) -> datetime:
    """When to renew: ``fraction`` of the life from issuance (not_before is backdated by ``CLOCK_SKEW``)."""
    issued = intermediate.not_valid_before_utc + CLOCK_SKEW
    return issued + (intermediate.not_valid_after_utc - issued) * fraction


def signer_context(ca_pem: Path) -> ssl.SSLContext:
    """TLS 1.3 to the signer, whose certificate must lead to the org root (and name the signer's host)."""
    return tls.agent_client_context(ca_pem, None, None)


async def request_intermediate(link: SignerLink, pki_dir: Path, key: ec.EllipticCurvePrivateKey, *,
                               current: CertificateAuthority | None = None,
                               token: str | None = None) -> list[x509.Certificate]:
    """Ask the signer to certify ``key``; return the checked chain (intermediate, delegation)."""
    chain, _ = await request_renewal(link, pki_dir, key, current=current, token=token)
    return chain


async def request_renewal(link: SignerLink, pki_dir: Path, key: ec.EllipticCurvePrivateKey, *,
                          current: CertificateAuthority | None = None, token: str | None = None,
                          bus: BusFiles | None = None) -> tuple[list[x509.Certificate], x509.Certificate | None]:
    """Ask the signer to certify ``key`` (and, with ``bus``, the node's bus key again); return the checked
    chain (intermediate, delegation) and the checked bus certificate (None without ``bus``)."""
    csr = build_csr(key).decode()
    bus_csr = bus.csr() if bus is not None else None
    ask = IntermediateRequest(node=link.node, csr=csr, token=token, bus_csr=bus_csr)
    if current is not None and token is None:
        ask.current = pem_chain([current.certificate]).decode()
        ask.signature = sign_proof(current.signing_key, csr, bus_csr)
    paths = PkiPaths.from_dir(pki_dir)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
            link.url.rstrip("/") + PATH, data=msgspec.json.encode(ask), ssl=signer_context(paths.ca_pem),
            headers={"Content-Type": "application/json"}) as response:
        # To its end (read(n) returns what is buffered so far: a split answer was once read in part), capped.
        body = await read_capped(response.content, MAX_RESPONSE_BYTES,
                                 lambda: CertValidationError("the signer's answer is too large"))
    if response.status != 200:
        raise SignerRefused(f"the signer refused ({response.status}): {_error_text(body)}")
    try:
        answer = msgspec.json.decode(body, type=IntermediateAnswer)
        chain = x509.load_pem_x509_certificates(answer.chain.encode())
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        raise CertValidationError(f"the signer's answer is malformed: {exc}") from exc
    names = permitted_names(current.certificate) if current is not None else []
    now = datetime.now(UTC)
    check_chain(chain, load_certificate(paths.ca_pem), key.public_key(), now=now, names=names)
    return chain, (check_bus_answer(bus, answer.bus_chain, now=now) if bus is not None else None)


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return "no reason given"


def check_chain(chain: list[x509.Certificate], root: x509.Certificate, public_key: ec.EllipticCurvePublicKey, *,
                now: datetime, names: Sequence[str] = ()) -> None:
    """The answer certifies ``public_key`` as a CA of path length 0, valid at ``now``, permitted the node's
    ``names`` (those its current intermediate permits: the names its server certificate must carry), and leads
    to ``root``. Anything else would be installed and break the node's TLS, so it is refused here."""
    if not 2 <= len(chain) <= 3 or chain[0].public_key() != public_key:
        raise CertValidationError("the signer's chain does not certify this node's new key")
    try:
        basic = chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value
        constraints = chain[0].extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound as exc:
        raise CertValidationError(f"the signer's intermediate lacks an extension: {exc}") from exc
    if not basic.ca or basic.path_length != 0:
        raise CertValidationError("the signer's certificate is not an issuing intermediate (CA, path length 0)")
    now = as_utc(now)
    for cert in chain:
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            raise CertValidationError(
                f"the signer's chain is not valid now ({cert.subject.rfc4514_string()}: "
                f"{cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()})")
    if not permitted_names(chain[0]):
        raise CertValidationError("the signer's intermediate permits no server name")
    missing = [name for name in names if not permits(constraints, name)]
    if missing:
        raise CertValidationError(f"the signer's intermediate does not permit this node's names: {', '.join(missing)}")
    try:
        for child, parent in zip(chain, [*chain[1:], root], strict=True):
            child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertValidationError("the signer's chain does not lead to the org root in ca.pem") from exc


def permitted_names(intermediate: x509.Certificate) -> list[str]:
    """The server names an intermediate's name constraints permit (what the node's server certificate names)."""
    constraints = intermediate.extensions.get_extension_for_class(x509.NameConstraints).value
    names: list[str] = []
    for entry in constraints.permitted_subtrees or []:
        if isinstance(entry, x509.DNSName):
            names.append(entry.value)
        elif isinstance(entry, x509.IPAddress):
            value = entry.value
            if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
                names.append(str(value.network_address))
    return names


def install(pki_dir: Path, key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate], *,
            now: datetime) -> CertificateAuthority:
    """Write the new intermediate, its key and a new server certificate (with its key) into the node's directory."""
    paths = PkiPaths.from_dir(pki_dir)
    ca = CertificateAuthority(chain[0], key, load_certificate(paths.ca_pem), tuple(chain[1:]))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = ca.issue_server_certificate(server_key.public_key(), permitted_names(chain[0]), now=as_utc(now))
    atomic_write_all([(paths.intermediate_key, private_key_pem(key), 0o600),
                      (paths.intermediate_pem, pem_chain(ca.chain), 0o644),
                      (paths.server_key, private_key_pem(server_key), 0o600),
                      (paths.server_pem, ca.chain_pem(server_cert), 0o644)])
    return ca


async def renew(pki_dir: Path, link: SignerLink, *, current: CertificateAuthority | None, token: str | None = None,
                now: datetime, bus: BusFiles | None = None) -> CertificateAuthority:
    """One renewal: new key here, CSR to the signer, checked answer installed; with ``bus``, the node's bus
    certificate too (written after the intermediate: the key is unchanged, so either file alone is usable)."""
    key = ec.generate_private_key(ec.SECP256R1())
    chain, bus_cert = await request_renewal(link, pki_dir, key, current=current, token=token, bus=bus)
    ca = await asyncio.to_thread(install, pki_dir, key, chain, now=now)  # fsyncs: not on the event loop
    if bus is not None and bus_cert is not None:
        await asyncio.to_thread(atomic_write, bus.cert, pem_chain([bus_cert]), 0o644)
    return ca
