"""Fetch the org TLS root for enrollment and authenticate it by a pinned SHA-256 fingerprint.

An enrolling agent has no trust anchor yet: it knows only the server URL and
the root's fingerprint that came with its enrollment token.  It downloads the
root's certificate (``ca.pem``) and trusts it only if its DER SHA-256 equals
that fingerprint; from then on every connection verifies against that root
(servers present their intermediate with their certificate).
"""

from __future__ import annotations

import hmac
import http.client
import logging
import re
import ssl
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.errors import CertError, PinMismatchError
from certs.pki import certificate_fingerprint_sha256
from common.proxy import https_connection

log = logging.getLogger(__name__)

CA_PATH = "/api/v1/enroll/ca.pem"
#: A CA certificate in PEM is a kilobyte or two; refuse to read more than this.
MAX_CA_PEM_BYTES = 64 * 1024

_HEX64 = re.compile(r"[0-9a-f]{64}")


def normalize_fingerprint(fingerprint: str) -> str:
    """Return a SHA-256 fingerprint as 64 lowercase hex digits.

    Accepts any case, with or without colons (or spaces) between bytes;
    raises ``ValueError`` if what is left is not 64 hex digits.
    """
    cleaned = re.sub(r"[:\s]", "", fingerprint).lower()
    if not _HEX64.fullmatch(cleaned):
        raise ValueError("a SHA-256 fingerprint is 64 hex digits (colons optional)")
    return cleaned


def fingerprint_of_pem(pem: bytes) -> str:
    """Lowercase hex SHA-256 over the DER of the (first) certificate in ``pem``."""
    return certificate_fingerprint_sha256(x509.load_pem_x509_certificate(pem))


def _unverified_tls13_context() -> ssl.SSLContext:
    """TLS context that does not verify the server: used only to download the public CA certificate.

    Why this is safe here and nowhere else: the only thing fetched on this
    connection is the CA certificate, which is public data.  It is not
    trusted because of the channel; it is trusted only after its DER SHA-256
    matches the fingerprint the admin gave out of band.  A man in the middle
    can at most make the fetch fail.  No token, cookie or other secret is
    ever sent on this connection; the enrollment request itself goes over a
    connection verified against the pinned CA.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def fetch_pinned_ca(base_url: str, expected_sha256: str, *, timeout: float = 10, proxy: str = "") -> bytes:
    """Download ``{base_url}/api/v1/enroll/ca.pem`` and return it if it matches the pin.

    Returns the PEM of the verified CA certificate (re-encoded, so nothing
    but that certificate is returned).  Raises ``PinMismatchError`` if the
    fingerprint differs, ``CertError`` for a bad URL, HTTP status or body,
    ``ValueError`` for a malformed fingerprint; network failures propagate
    as ``OSError`` so callers can retry them. ``proxy`` is the agent's proxy setting (common/proxy.py).
    """
    expected = normalize_fingerprint(expected_sha256)
    url = urlsplit(base_url)
    if url.scheme != "https" or not url.hostname:
        raise CertError(f"enrollment URL must be https://host[:port]: {base_url!r}")
    try:
        port = url.port or 443
    except ValueError as exc:
        raise CertError(f"bad port in enrollment URL {base_url!r}") from exc
    path = url.path.rstrip("/") + CA_PATH

    conn = https_connection(url.hostname, port, timeout=timeout, context=_unverified_tls13_context(), setting=proxy)
    try:
        conn.request("GET", path, headers={"Accept": "application/x-pem-file"})
        resp = conn.getresponse()
        body = resp.read(MAX_CA_PEM_BYTES + 1)
        status = resp.status
    except http.client.HTTPException as exc:
        raise CertError(f"bad HTTP response fetching CA from {base_url}: {exc!r}") from exc
    finally:
        conn.close()

    if status != 200:
        raise CertError(f"fetching CA from {base_url}{CA_PATH}: HTTP {status}")
    if len(body) > MAX_CA_PEM_BYTES:
        raise CertError(f"CA response from {base_url} is larger than {MAX_CA_PEM_BYTES} bytes")
    try:
        certs = x509.load_pem_x509_certificates(body)
    except ValueError as exc:
        raise CertError(f"CA response from {base_url} is not a PEM certificate: {exc}") from exc
    if len(certs) != 1:
        raise CertError(f"CA response from {base_url} holds {len(certs)} certificates, expected 1")

    pem = certs[0].public_bytes(serialization.Encoding.PEM)
    actual = fingerprint_of_pem(pem)
    if not hmac.compare_digest(actual, expected):
        log.warning("CA fingerprint mismatch from %s: got %s, pinned %s", base_url, actual, expected)
        raise PinMismatchError(f"CA certificate from {base_url} has SHA-256 {actual}, pinned {expected}")
    return pem
