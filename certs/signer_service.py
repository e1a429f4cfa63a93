"""The node-issuing signer: a small service on its own host that renews nodes' short-lived intermediates.

It holds the root's delegation (:mod:`certs.delegation`, its key decrypted into memory at start
from a passphrase file) and the allow-list ``nodes.json``, read again for every request so that
``helpline certs signer remove-node`` takes effect at once (every read-modify-write of it, here and
in those commands, holds its file lock: :func:`certs.delegation.nodes_locked`). It serves one route
over TLS 1.3 with its certificate from the delegation (nodes verify it against the root). A node authenticates in
the request (:mod:`certs.signer_wire`) rather than with a TLS client certificate: its credential
is an intermediate, a CA key, which has no business as a TLS client leaf, and a signature by that
key over the new CSR proves possession and binds the request to the key being certified.

Every issuance and refusal is written to the signer's hash-chained audit file (:mod:`certs.signer_audit`);
an issuance that cannot be recorded (a full disk, a torn last line) is not made (503 ``audit_unavailable``).

With the bus CA in its directory (``certs signer bus-ca``) it also renews nodes' NATS certificates
with their intermediates, for the key and id bound on the allow-list (:mod:`certs.bus_renewal`).

It refuses to start if its directory holds the root's private key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certs import bus_renewal, signer_audit, tls
from certs.delegation import (
    DelegationCA,
    SignerPaths,
    load_nodes,
    node_chain,
    nodes_locked,
    save_nodes,
    signer_root_key_files,
)
from certs.errors import CertError, CsrError, RootKeyOnServerError
from certs.nats import BusCA
from certs.pki import certificate_serial_hex, csr_public_key, pem_chain
from certs.signer_wire import MAX_REQUEST_BYTES, PATH, IntermediateAnswer, IntermediateRequest, proof_holds
from common.signals import stop_on_signals

log = logging.getLogger(__name__)

_DELEGATION: web.AppKey[DelegationCA] = web.AppKey("delegation", DelegationCA)
_PATHS: web.AppKey[SignerPaths] = web.AppKey("paths", SignerPaths)
_THROTTLE: web.AppKey[signer_audit.RefusalThrottle] = web.AppKey("audit_throttle", signer_audit.RefusalThrottle)
_BUS_CA: web.AppKey[BusCA | None] = web.AppKey("bus_ca")


def _refuse(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class _Refusal(Exception):
    """A refused request: its HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def _refused(request: web.Request, node: str, refusal: _Refusal) -> web.Response:
    """The refusal's answer, after its audit record (throttled: :class:`signer_audit.RefusalThrottle`)."""
    peer = request.remote or ""
    left_out = request.app[_THROTTLE].admit(peer, time.monotonic(), refusal.code)
    if left_out is not None:
        try:
            await asyncio.to_thread(signer_audit.append, request.app[_PATHS].directory, "refused", node,
                                    code=refusal.code, peer=peer, **left_out)
        except (OSError, signer_audit.AuditError):
            log.exception("could not write the signer's audit record of a refusal")
    return _refuse(refusal.status, refusal.code, refusal.message)


async def issue(request: web.Request) -> web.Response:
    """Issue the asking node a new intermediate, if it is allowed and proves itself."""
    body = await request.read()
    try:
        ask = msgspec.json.decode(body, type=IntermediateRequest)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return await _refused(request, "", _Refusal(400, "bad_request", f"malformed request: {exc}"))
    try:
        public_key = csr_public_key(ask.csr.encode())
    except CsrError as exc:
        return await _refused(request, ask.node, _Refusal(400, "bad_csr", str(exc)))
    delegation = request.app[_DELEGATION]
    try:  # in a thread: the allow-list's file lock may wait for a 'certs signer add-node/remove-node'
        cert, bus_cert = await asyncio.to_thread(_grant, delegation, request.app[_BUS_CA], request.app[_PATHS], ask,
                                                 public_key, request.remote or "")
    except _Refusal as refusal:
        return await _refused(request, ask.node, refusal)
    except (OSError, signer_audit.AuditError) as exc:  # nothing issued: the record comes first
        log.error("refused an intermediate: the audit trail cannot be written: %s", exc, extra={"node": ask.node})
        hint = " (helpline certs signer audit --repair)" if isinstance(exc, signer_audit.TornTail) else ""
        return _refuse(503, "audit_unavailable", f"the signer cannot write its audit trail{hint}; nothing was "
                                                 "issued: try again once its operator has fixed it")
    log.info("issued node intermediate", extra={"node": ask.node, "serial": certificate_serial_hex(cert),
                                                "until": cert.not_valid_after_utc.isoformat()})
    answer = IntermediateAnswer(chain=pem_chain(node_chain(cert, delegation)).decode(),
                                bus_chain=pem_chain([bus_cert]).decode() if bus_cert is not None else None)
    return web.Response(body=msgspec.json.encode(answer), content_type="application/json")


def _grant(delegation: DelegationCA, bus_ca: BusCA | None, paths: SignerPaths, ask: IntermediateRequest,
           public_key: ec.EllipticCurvePublicKey, peer: str) -> tuple[x509.Certificate, x509.Certificate | None]:
    """Check the node against the allow-list and issue, all under the allow-list's lock (``_Refusal`` if not):
    the intermediate, and the bus certificate when the request asks for one (both or neither).
    The issuance is audited (fsynced) before the allow-list records it and before the node gets it: a
    certificate nobody can account for is never handed out."""
    with nodes_locked(paths):  # one read-modify-write of nodes.json at a time, across processes
        nodes = load_nodes(paths)
        entry = nodes.get(ask.node)
        if entry is None:
            log.warning("refused an intermediate: node not on the allow-list", extra={"node": ask.node[:64]})
            raise _Refusal(403, "node_not_allowed", "this node is not on the signer's allow-list")
        now = datetime.now(UTC)
        if ask.token is not None:
            if not entry.token_matches(ask.token, time.time()):
                raise _Refusal(403, "bad_token", "the enrolment token is not valid (wrong, used or expired)")
            entry.token_sha256 = None
        elif not _proven(ask, delegation, entry.serials, now):
            log.warning("refused an intermediate: no valid proof", extra={"node": ask.node})
            raise _Refusal(403, "bad_proof", "prove the request with the node's current, unexpired intermediate "
                                             "(or a new enrolment token)")
        lifetime = timedelta(seconds=entry.lifetime_s)
        bus_cert = None
        if ask.bus_csr is not None:
            try:
                bus_cert = bus_renewal.issue_bus(bus_ca, entry.bus_node, entry.bus_spki, ask.bus_csr, now=now,
                                                 lifetime=lifetime)
            except bus_renewal.BusRefused as exc:
                raise _Refusal(403, "bus_not_allowed", str(exc)) from exc
            except CsrError as exc:
                raise _Refusal(400, "bad_bus_csr", str(exc)) from exc
        try:
            cert = delegation.issue_node_intermediate(public_key, ask.node, entry.server_names, now=now,
                                                      lifetime=lifetime)
        except CertError as exc:
            raise _Refusal(503, "signer_expired", str(exc)) from exc
        # Joined with a token: only the new intermediate proves the next renewal (not one issued before it).
        kept = [] if ask.token is not None else entry.serials[:1]
        entry.serials = [certificate_serial_hex(cert), *kept]
        signer_audit.append(paths.directory, "issued", ask.node, serial=certificate_serial_hex(cert),
                            not_after=cert.not_valid_after_utc.isoformat(), peer=peer,
                            via="token" if ask.token is not None else "renewal",
                            proven_by=None if ask.token is not None else _serial_of(ask.current),
                            **({} if bus_cert is None else {"bus_serial": certificate_serial_hex(bus_cert),
                                                            "bus_node": entry.bus_node}))
        save_nodes(paths, nodes)
    return cert, bus_cert


def _serial_of(pem: str | None) -> str | None:
    try:
        return certificate_serial_hex(x509.load_pem_x509_certificate((pem or "").encode()))
    except ValueError:
        return None


def _proven(ask: IntermediateRequest, delegation: DelegationCA, serials: list[str], now: datetime) -> bool:
    """The request carries the node's current (or previous), unexpired intermediate and its key's signature."""
    if ask.current is None or ask.signature is None:
        return False
    try:
        current = x509.load_pem_x509_certificate(ask.current.encode())
    except ValueError:
        return False
    return (certificate_serial_hex(current) in serials and delegation.issued(current)
            and current.not_valid_before_utc <= now < current.not_valid_after_utc
            and proof_holds(current, ask.csr, ask.signature, ask.bus_csr))


def build_app(delegation: DelegationCA, paths: SignerPaths, bus_ca: BusCA | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[_DELEGATION] = delegation
    app[_BUS_CA] = bus_ca
    app[_PATHS] = paths
    app[_THROTTLE] = signer_audit.RefusalThrottle()
    app.router.add_post(PATH, issue)
    return app


def load(directory: Path, passphrase: bytes) -> DelegationCA:
    """The delegation, after checking the directory holds no root key (``CertError`` otherwise)."""
    found = signer_root_key_files(directory)
    if found:
        raise RootKeyOnServerError(f"the signer's directory holds the root's private key "
                                   f"({', '.join(map(str, found))}): move it offline")
    delegation = DelegationCA.load(directory, passphrase)
    if datetime.now(UTC) >= delegation.not_after:
        raise CertError(f"the delegation expired at {delegation.not_after.isoformat()}: helpline certs delegate")
    return delegation


async def serve(directory: Path, passphrase: bytes, host: str, port: int) -> None:
    """Run the signer until SIGINT/SIGTERM."""
    paths = SignerPaths(Path(directory))
    delegation = load(paths.directory, passphrase)
    bus_ca = bus_renewal.load_bus_ca(paths.directory, passphrase)
    # Begins the trail on a directory delegated before it existed; refuses one whose trail was removed.
    signer_audit.begin(paths.directory, "started", host=host, port=port)
    ctx = tls.console_listener_context(paths.signer_pem, paths.signer_key)  # TLS 1.3 only, server-authenticated
    runner = web.AppRunner(build_app(delegation, paths, bus_ca), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ctx).start()
    log.warning("node signer listening on %s:%d (delegation until %s; %s)", host, port,
                delegation.not_after.isoformat(), "renews bus certificates too" if bus_ca else "no bus CA")
    print(f"signer listening on {host}:{port}", flush=True)
    try:
        await stop_on_signals().wait()
    finally:
        await runner.cleanup()
