"""Coming back with an expired certificate: prove the key, get a new certificate, no re-enrollment.

A device off longer than its certificate's life (48 h on a delegated node) cannot pass the agent
listener's mutual TLS. Before each connection the control loop asks :func:`recover_if_expired`:
when the certificate's *stored* validity says it has ended (the TLS alert is not guessed from), the
agent asks the console port (server-authenticated TLS against the pinned root, as enrollment) for a
nonce, makes a NEW key, and signs (nonce, device id, CSR) with its CURRENT key — the expired
certificate's (protocol/recovery.py). The server answers a certificate issued as a renewal is; the
agent checks it chains to the pinned root and is for the new key, then stores key and certificate
together. The outcome is kept in agent.json for ``helpline agent doctor``.

A definitive refusal (revoked, past the server's grace, a key renewed away, recovery off) is not
retried for :data:`RETRY_REFUSED_S`: only an administrator can help then, by enrolling the device again.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import ssl
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from certs import tls
from common.proxy import https_connection
from protocol.recovery import proof_bytes

from .state import AgentState

log = logging.getLogger(__name__)

#: After a refusal only an administrator can lift, ask again this much later (not at every reconnect).
RETRY_REFUSED_S = 3600.0
#: Where the last attempt's outcome is kept in agent.json.
INFO_KEY = "recovery"
#: Largest answer read from the server.
MAX_ANSWER = 64 * 1024


class RecoveryFailed(Exception):
    """Recovery did not happen; ``code`` is the server's error code (or a local one), ``final`` if retrying
    will not help until an administrator acts."""

    def __init__(self, code: str, message: str, *, final: bool = False) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message
        self.final = final


@dataclass(frozen=True)
class Outcome:
    """The last recovery attempt, as agent.json keeps it."""

    at: float
    ok: bool
    code: str

    @classmethod
    def load(cls, state: AgentState) -> Outcome | None:
        raw = state.load_info().get(INFO_KEY)
        if not isinstance(raw, dict):
            return None
        try:
            return cls(float(raw["at"]), bool(raw["ok"]), str(raw["code"]))
        except (KeyError, TypeError, ValueError):
            return None

    def save(self, state: AgentState) -> None:
        state.save_info({**state.load_info(), INFO_KEY: {"at": self.at, "ok": self.ok, "code": self.code}})


def expired_for(state: AgentState, now: datetime) -> float | None:
    """Seconds since this device's certificate ended, by its stored validity; None while it is valid."""
    validity = state.certificate_validity()
    if validity is None:  # state from before validity was recorded: read the certificate once
        from certs.pki import load_certificate

        try:
            cert = load_certificate(state.cert_path)
        except ValueError as exc:  # a corrupt device.crt: raised out of here it would end the reconnect loop
            raise RecoveryFailed("bad_certificate", f"{state.cert_path} is not a PEM certificate: enroll this "
                                 "device again", final=True) from exc
        validity = (cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())
        state.record_certificate_validity(*validity)
    over = now.timestamp() - validity[1]
    return over if over >= 0 else None


def _post(state: AgentState, path: str, body: dict[str, Any], *, proxy: str, timeout: float) -> dict[str, Any]:
    """One JSON POST to the console URL the device enrolled with, TLS verified against the pinned root."""
    console_url = str(state.load_info().get("console_url") or "")
    target = urlsplit(console_url)
    if target.scheme != "https" or not target.hostname:
        raise RecoveryFailed("no_console_url", "this device's state names no https console URL", final=True)
    context = tls.agent_client_context(state.ca_path, None, None)
    connection = https_connection(target.hostname, target.port or 443, context=context, timeout=timeout,
                                  setting=proxy)
    try:
        connection.request("POST", target.path.rstrip("/") + path, body=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        status, raw = response.status, response.read(MAX_ANSWER)
    except (http.client.HTTPException, ssl.SSLError, OSError) as exc:
        raise RecoveryFailed("unreachable", f"cannot reach {console_url}: {exc}") from exc
    finally:
        connection.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if 200 <= status < 300 and isinstance(answer, dict):
        return answer
    error = answer.get("error") if isinstance(answer, dict) else None
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    # 403/404: the device is revoked, unknown, past the grace, its key was renewed away, or recovery is off.
    raise RecoveryFailed(code or f"http_{status}", message[:300] or f"HTTP {status}", final=status in (403, 404))


def recover(state: AgentState, *, proxy: str = "", timeout: float = 20.0) -> datetime:
    """Recover this device's expired certificate; blocking (run it in a thread). Its new end."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from certs.errors import CertError
    from certs.pki import build_csr, check_issued_chain, generate_device_key, load_private_key, private_key_pem
    from common.files import atomic_write_all

    device_id = state.device_id
    try:
        current = load_private_key(state.key_path)
        pinned = x509.load_pem_x509_certificate(state.ca_path.read_bytes())
    except ValueError as exc:  # corrupt state: a ValueError out of here would end the reconnect loop
        raise RecoveryFailed("bad_state", f"device.key or ca.crt is corrupt ({exc}): enroll this device again",
                             final=True) from exc
    if not isinstance(current, ec.EllipticCurvePrivateKey):
        raise RecoveryFailed("bad_key", "device.key is not an ECDSA key", final=True)
    nonce = str(_post(state, "/api/v1/enroll/recover/nonce", {"device_id": device_id},
                      proxy=proxy, timeout=timeout).get("nonce", ""))
    key = generate_device_key()
    csr = build_csr(key).decode()
    signature = current.sign(proof_bytes(nonce, device_id, csr), ec.ECDSA(hashes.SHA256()))
    answer = _post(state, "/api/v1/enroll/recover", {
        "device_id": device_id, "nonce": nonce, "chain": state.cert_path.read_text(), "csr": csr,
        "signature": base64.b64encode(signature).decode()}, proxy=proxy, timeout=timeout)
    chain = str(answer.get("certificate", "")).encode()
    try:  # a chain that does not lead to the pinned root would lock this device out: keep the old one
        cert = check_issued_chain(chain, pinned, key.public_key())
    except CertError as exc:
        raise RecoveryFailed("bad_certificate", f"the recovered certificate was refused: {exc}") from exc
    atomic_write_all([(state.key_path, private_key_pem(key), 0o600), (state.cert_path, chain, 0o644)])
    state.record_certificate_validity(cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())
    return cert.not_valid_after_utc


async def recover_if_expired(state: AgentState, now: datetime, *, proxy: str = "") -> bool:
    """Before connecting: recover an expired certificate (True when it did); raises :class:`RecoveryFailed`."""
    over = expired_for(state, now)
    if over is None:
        return False
    last = Outcome.load(state)
    if last is not None and not last.ok and last.code.startswith("final:") and time.time() - last.at < RETRY_REFUSED_S:
        raise RecoveryFailed(last.code.removeprefix("final:"), "recovery was refused less than an hour ago; "
                             "enroll this device again if it stays refused", final=True)
    log.warning("certificate expired; recovering it by proving this device's key",
                extra={"expired_days": round(over / 86400, 2)})
    try:
        ends = await asyncio.to_thread(recover, state, proxy=proxy)
    except RecoveryFailed as exc:
        if exc.code == "not_expired":  # by the server's clock it has not ended: this one runs ahead; connect
            log.warning("the server says this certificate has not expired: is this device's clock ahead?")
            return False
        Outcome(time.time(), False, f"final:{exc.code}" if exc.final else exc.code).save(state)
        log.error("certificate recovery failed", extra={"code": exc.code, "reason": exc.message,
                                                        "final": exc.final})
        raise
    Outcome(time.time(), True, "recovered").save(state)
    log.info("certificate recovered; connecting with it", extra={"expires": ends.isoformat()})
    return True


def describe(state: AgentState, over_s: float) -> str:
    """For ``agent doctor``: how long ago the certificate ended and where recovery stands."""
    days = int(over_s // 86400)
    head = f"certificate expired {days} day{'s' if days != 1 else ''} ago"
    last = Outcome.load(state)
    if last is None or last.ok:
        return (f"{head}; recovery runs at the agent's next connection (proof of this device's key, accepted "
                "within the server's grace, 30 days by default)")
    when = datetime.fromtimestamp(last.at).astimezone().strftime("%Y-%m-%d %H:%M")
    code = last.code.removeprefix("final:")
    if last.code.startswith("final:"):
        return f"{head}; recovery refused at {when} ({code}): enroll this device again"
    return f"{head}; recovery failed at {when} ({code}); retried at the next connection"
