"""The node signer's audit trail (certs/signer_audit.py): a hash-chained record of everything it did and refused.

Real signer process over real TLS 1.3, the real CLI for add-node/remove-node/join/audit; the refused requests
are sent as a node (or anyone reaching the signer) would send them.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from certs import signer_audit
from certs.node_link import SignerLink, SignerRefused, renew, signer_context
from certs.pki import CertificateAuthority, build_csr, certificate_serial_hex, pem_chain
from certs.signer_wire import PATH, IntermediateRequest, sign_proof
from tests.procs import helpline
from tests.test_pki_delegation import _join, running_signer


@pytest.fixture
def signer(tmp_path: Path) -> Iterator[dict[str, Path | str]]:
    with running_signer(tmp_path) as made:
        yield made


async def _ask(signer: dict[str, Path | str], body: bytes) -> tuple[int, str]:
    """POST ``body`` to the signer; its status and error code."""
    ctx = signer_context(Path(signer["root"]) / "ca.pem")
    async with aiohttp.ClientSession() as http, http.post(str(signer["url"]) + PATH, data=body, ssl=ctx,
                                                          headers={"Content-Type": "application/json"}) as response:
        answer: Any = await response.json(content_type=None)
    return response.status, str(answer.get("error", {}).get("code", ""))


def _events(signer: dict[str, Path | str]) -> list[tuple[str, str, str]]:
    return [(r["event"], r["node"], r.get("code") or r.get("via") or "")
            for r in signer_audit.records(Path(signer["dir"]))]


async def test_every_issuance_refusal_and_allow_list_change_is_chained(tmp_path: Path,
                                                                       signer: dict[str, Path | str]) -> None:
    """add-node, join (token), renewal (proof), unknown node, malformed request, bad CSR, wrong key, remove-node and
    a removed node's renewal each leave one record; no key, CSR, signature or token in the file; the chain
    verifies, and a changed or removed line fails ``certs signer audit --verify`` naming the line."""
    pki = tmp_path / "srv" / "pki"
    token_line = _join(tmp_path, signer, pki)
    assert token_line.returncode == 0
    enrolment_token = (tmp_path / "token").read_text().strip()
    link = SignerLink.load(pki)
    assert link is not None
    first = CertificateAuthority.load(pki)
    renewed = await renew(pki, link, current=first, now=datetime.now(UTC))

    csr = build_csr(ec.generate_private_key(ec.SECP256R1())).decode()
    unknown = IntermediateRequest(node="node-x", csr=csr, token="not-a-token")
    assert await _ask(signer, msgspec.json.encode(unknown)) == (403, "node_not_allowed")
    assert await _ask(signer, b"{") == (400, "bad_request")
    bad_csr = IntermediateRequest(node="node-a", csr="-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", token="x")
    assert await _ask(signer, msgspec.json.encode(bad_csr)) == (400, "bad_csr")
    thief_key = ec.generate_private_key(ec.SECP256R1())  # the current certificate, signed by another key
    wrong_key = IntermediateRequest(node="node-a", csr=csr, current=pem_chain([renewed.certificate]).decode(),
                                    signature=sign_proof(thief_key, csr))
    assert await _ask(signer, msgspec.json.encode(wrong_key)) == (403, "bad_proof")

    helpline("certs", "signer", "remove-node", "--dir", str(signer["dir"]), "--node", "node-a")
    with pytest.raises(SignerRefused, match="allow-list"):
        await renew(pki, link, current=renewed, now=datetime.now(UTC))

    assert _events(signer) == [
        ("node_added", "node-a", ""), ("issued", "node-a", "token"), ("issued", "node-a", "renewal"),
        ("refused", "node-x", "node_not_allowed"), ("refused", "", "bad_request"), ("refused", "node-a", "bad_csr"),
        ("refused", "node-a", "bad_proof"), ("node_removed", "node-a", ""), ("refused", "node-a", "node_not_allowed")]
    records = list(signer_audit.records(Path(signer["dir"])))
    assert records[1]["serial"] == certificate_serial_hex(first.certificate)
    assert records[2]["serial"] == certificate_serial_hex(renewed.certificate)
    assert records[2]["proven_by"] == certificate_serial_hex(first.certificate)
    assert records[0]["server_names"] == ["localhost"] and records[3]["peer"] == "127.0.0.1"

    path = signer_audit.audit_path(Path(signer["dir"]))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for secret in (enrolment_token, "BEGIN", "not-a-token", wrong_key.signature or "?"):
        assert secret not in text

    shown = helpline("certs", "signer", "audit", "--dir", str(signer["dir"]), "--verify")
    assert shown.returncode == 0 and "chain intact: 9 records" in shown.stdout, shown.stdout
    assert "bad_proof" in shown.stdout and "node-x" in shown.stdout

    lines = text.splitlines(keepends=True)
    changed = json.loads(lines[2])
    changed["serial"] = "00" * 16  # a record of another certificate slipped in
    path.write_text("".join([*lines[:2], json.dumps(changed, sort_keys=True, separators=(",", ":")) + "\n",
                             *lines[3:]]))
    broken = helpline("certs", "signer", "audit", "--dir", str(signer["dir"]), "--verify", check=False)
    assert broken.returncode == 1 and "line 3" in broken.stderr and "changed" in broken.stderr, broken.stderr
    path.write_text("".join([*lines[:4], *lines[5:]]))  # a refusal removed
    broken = helpline("certs", "signer", "audit", "--dir", str(signer["dir"]), "--verify", check=False)
    assert broken.returncode == 1 and "line 5" in broken.stderr, broken.stderr
    path.write_text(text)
    assert helpline("certs", "signer", "audit", "--dir", str(signer["dir"]), "--verify").returncode == 0


def test_refusals_are_throttled_per_peer_and_secrets_are_refused() -> None:
    """Past the window's allowance a peer's refusals are counted, not written, and the count rides on its next
    written one; a caller naming a secret field is refused before anything is written."""
    throttle = signer_audit.RefusalThrottle(per_window=2, window_s=60)
    assert [throttle.admit("p", 0.0) for _ in range(5)] == [0, 0, None, None, None]
    assert throttle.admit("q", 1.0) == 0
    assert throttle.admit("p", 61.0) == 3
    with pytest.raises(ValueError, match="token"):
        signer_audit.append(Path("/nonexistent"), "node_added", "n", token="secret")
