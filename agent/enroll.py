"""Enrollment: key generated here, CSR + one-time token sent, certificate stored.

The org TLS root is fetched from the server and accepted only if its SHA-256 fingerprint
matches the one given with the token; the enrollment request itself then runs over TLS
verified against that root (the server presents its chain), and the certificate chain the
server answers must lead to it too. The private key never leaves the device.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

from certs import tls
from certs.errors import CertError
from certs.pinning import fetch_pinned_ca
from certs.pki import build_csr, check_issued_chain, generate_device_key, write_private_key
from common.files import atomic_write
from common.proxy import for_target, https_connection

from .state import AgentState

log = logging.getLogger(__name__)


class EnrollmentFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class EnrollResult:
    device_id: str
    group: str
    agent_url: str


def enroll(console_url: str, token: str, ca_sha256: str, state: AgentState, *, timeout: float = 20,
           root_sha256: str | None = None, proxy: str = "") -> EnrollResult:
    """Enroll this device; blocking (run from the CLI or a thread).

    ``root_sha256`` is the org trust root's fingerprint, kept as this device's pin when its
    configuration names none (a malformed one is refused before anything is sent). ``proxy`` is the
    agent's proxy setting (common/proxy.py): both requests go through it, TLS end to end inside.
    """
    from .authority import PIN_INFO_KEY, parse_pin

    pin = parse_pin(root_sha256)
    console_url = console_url.rstrip("/")
    state.ensure_dir()
    target = urlsplit(console_url)
    route = for_target(proxy, target.hostname or "")
    where = f"{console_url} through the proxy {route}" if route else console_url
    try:
        ca_pem = fetch_pinned_ca(console_url, ca_sha256, timeout=timeout, proxy=proxy)
    except OSError as exc:
        raise EnrollmentFailed("unreachable", f"cannot reach {where}: {exc}") from exc
    state.ca_path.write_bytes(ca_pem)
    key = generate_device_key()
    csr = build_csr(key).decode()
    context = tls.agent_client_context(state.ca_path, None, None)
    body = json.dumps({"token": token, "csr": csr}).encode()
    if target.scheme != "https" or not target.hostname:
        raise EnrollmentFailed("bad_url", "the server URL must start with https://")
    connection = https_connection(target.hostname, target.port or 443, context=context, timeout=timeout,
                                  setting=proxy)
    try:
        connection.request("POST", target.path.rstrip("/") + "/api/v1/enroll", body=body,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        status, raw = response.status, response.read(64 * 1024)
    except (http.client.HTTPException, ssl.SSLError, OSError) as exc:
        raise EnrollmentFailed("unreachable", f"cannot reach {where}: {exc}") from exc
    finally:
        connection.close()
    if not 200 <= status < 300:
        raise _error_from(status, raw)
    try:
        answer = json.loads(raw)
    except ValueError as exc:
        raise EnrollmentFailed("bad_answer", "the server's enrollment answer is not JSON") from exc
    cert_pem = answer["certificate"].encode()  # the device certificate, then the node's intermediate
    try:
        cert = check_issued_chain(cert_pem, x509.load_pem_x509_certificate(ca_pem), key.public_key())
    except CertError as exc:
        raise EnrollmentFailed("bad_certificate", f"the server's certificate does not chain to the pinned root: "
                                                  f"{exc}") from exc
    write_private_key(state.key_path, key)
    atomic_write(state.cert_path, cert_pem, 0o644)
    info = {"device_id": answer["device_id"], "group": answer["group"], "agent_url": answer["agent_url"],
            "console_url": console_url, "cert_not_before": cert.not_valid_before_utc.timestamp(),
            "cert_not_after": cert.not_valid_after_utc.timestamp()}
    server_name = answer.get("agent_server_name")
    if isinstance(server_name, str) and server_name:  # a one-port server: the agent route's TLS name
        info["agent_server_name"] = server_name[:253]
    if pin is not None:
        info[PIN_INFO_KEY] = pin
    state.save_info(info)
    log.info("enrolled", extra={"device_id": answer["device_id"], "group": answer["group"]})
    return EnrollResult(answer["device_id"], answer["group"], answer["agent_url"])


def _error_from(status: int, body: bytes) -> EnrollmentFailed:
    try:
        error = json.loads(body[: 16 * 1024])["error"]
        return EnrollmentFailed(str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return EnrollmentFailed(f"http_{status}", f"server refused enrollment with HTTP {status}")
