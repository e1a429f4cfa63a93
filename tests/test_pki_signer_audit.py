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
from tests.procs import free_port, helpline, spawn, wait_for_port
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
        ("delegated", "", ""), ("started", "", ""), ("node_added", "node-a", ""), ("issued", "node-a", "token"), ("issued", "node-a", "renewal"),
        ("refused", "node-x", "node_not_allowed"), ("refused", "", "bad_request"), ("refused", "node-a", "bad_csr"),
        ("refused", "node-a", "bad_proof"), ("node_removed", "node-a", ""), ("refused", "node-a", "node_not_allowed")]
    records = list(signer_audit.records(Path(signer["dir"])))
    assert records[3]["serial"] == certificate_serial_hex(first.certificate)
    assert records[4]["serial"] == certificate_serial_hex(renewed.certificate)
    assert records[4]["proven_by"] == certificate_serial_hex(first.certificate)
    assert records[2]["server_names"] == ["localhost"] and records[5]["peer"] == "127.0.0.1"

    path = signer_audit.audit_path(Path(signer["dir"]))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for secret in (enrolment_token, "BEGIN", "not-a-token", wrong_key.signature or "?"):
        assert secret not in text

    shown = helpline("certs", "signer", "audit", "--dir", str(signer["dir"]), "--verify")
    assert shown.returncode == 0 and "chain intact: 11 records" in shown.stdout, shown.stdout
    assert "bad_proof" in shown.stdout and "node-x" in shown.stdout

    lines = text.splitlines(keepends=True)
    changed = json.loads(lines[4])
    changed["serial"] = "00" * 16  # a record of another certificate slipped in
    path.write_text("".join([*lines[:4], json.dumps(changed, sort_keys=True, separators=(",", ":")) + "\n",
                             *lines[5:]]))
    broken = helpline("certs", "signer", "audit", "--dir", str(signer["dir"]), "--verify", check=False)
    assert broken.returncode == 1 and "line 5" in broken.stderr and "changed" in broken.stderr, broken.stderr
    path.write_text("".join([*lines[:6], *lines[7:]]))  # a refusal removed
    broken = helpline("certs", "signer", "audit", "--dir", str(signer["dir"]), "--verify", check=False)
    assert broken.returncode == 1 and "line 7" in broken.stderr, broken.stderr
    path.write_text(text)
    assert helpline("certs", "signer", "audit", "--dir", str(signer["dir"]), "--verify").returncode == 0


def test_refusals_are_throttled_per_peer_and_secrets_are_refused() -> None:
    """Past the window's allowance a peer's refusals are counted, not written, and the count rides on its next
    written one; a caller naming a secret field is refused before anything is written."""
    throttle = signer_audit.RefusalThrottle(per_window=2, window_s=60)
    assert [throttle.admit("p", 0.0) for _ in range(5)] == [{}, {}, None, None, None]
    assert throttle.admit("q", 1.0) == {}
    assert throttle.admit("p", 61.0) == {"suppressed": 3}
    with pytest.raises(ValueError, match="token"):
        signer_audit.append(Path("/nonexistent"), "node_added", "n", token="secret")


def test_many_peers_are_capped_together_and_the_count_rides_on_the_next_record() -> None:
    """Refusals from many addresses, each under its own allowance, stop being written past the global cap; the
    number left out is recorded with the next refusal written once the window has passed."""
    throttle = signer_audit.RefusalThrottle(per_window=2, window_s=60, all_per_window=3)
    assert [throttle.admit(f"10.0.0.{i}", 0.0) for i in range(6)] == [{}, {}, {}, None, None, None]
    assert throttle.admit("10.0.0.9", 61.0) == {"suppressed_all": 3,
                                                "suppressed_top": ["10.0.0.3=1", "10.0.0.4=1", "10.0.0.5=1"]}
    assert throttle.admit("10.0.0.9", 62.0) == {}


def test_a_few_addresses_cannot_keep_security_refusals_out() -> None:
    """Ten addresses filling the global cap with junk (bad_request) leave out only junk: another address's
    bad_proof and node_not_allowed (a stolen intermediate's renewal) are written; a peer's own junk does not use up
    its allowance of security refusals; the peers left out most are named; IPv6 is counted by /64."""
    throttle = signer_audit.RefusalThrottle(per_window=30, window_s=60, all_per_window=300)
    for i in range(10):
        assert all(throttle.admit(f"10.0.0.{i}", 0.0, "bad_request") == {} for _ in range(30))
    assert throttle.admit("10.0.0.0", 1.0, "bad_request") is None  # its own allowance is spent
    assert throttle.admit("192.0.2.7", 1.0, "bad_csr") is None  # the global cap holds the rest
    assert throttle.admit("192.0.2.7", 1.0, "bad_proof") == {}
    assert throttle.admit("192.0.2.8", 1.0, "node_not_allowed") == {}
    assert throttle.admit("10.0.0.1", 1.0, "bad_proof") == {}  # its junk did not use up this allowance
    assert [throttle.admit("192.0.2.9", 2.0, "bad_request") for _ in range(2)] == [None, None]
    written = throttle.admit("198.51.100.1", 61.0, "bad_csr")
    assert written == {"suppressed_all": 3, "suppressed_top": ["192.0.2.9=2", "192.0.2.7=1"]}, written
    ipv6 = [throttle.admit(f"2001:db8:1:2::{i:x}", 100.0, "bad_proof") for i in range(31)]
    assert ipv6[:30] == [{}] * 30 and ipv6[30] is None  # one /64, one allowance
    assert throttle.admit("2001:db8:1:3::1", 100.0, "bad_proof") == {}


async def test_a_missing_or_torn_trail_is_refused_and_a_torn_one_repaired(tmp_path: Path,
                                                                         signer: dict[str, Path | str]) -> None:
    """A torn last line: the signer issues nothing (503 audit_unavailable, renewals included) and add-node and
    remove-node change nothing (they recorded after saving before); ``audit --repair`` cuts it off, records
    ``repaired``, and all works again. A removed trail while nodes are allowed: ``--verify`` and ``serve``
    refuse it instead of reading "0 records" and starting a fresh chain."""
    directory = Path(signer["dir"])
    pki = tmp_path / "srv" / "pki"
    assert _join(tmp_path, signer, pki).returncode == 0
    link = SignerLink.load(pki)
    assert link is not None
    path = signer_audit.audit_path(directory)
    whole = path.read_bytes()
    with path.open("ab") as file:
        file.write(b'{"seq":99,"ev')  # a write cut short

    with pytest.raises(SignerRefused, match="audit"):
        await renew(pki, link, current=CertificateAuthority.load(pki), now=datetime.now(UTC))
    added = helpline("certs", "signer", "add-node", "--dir", str(directory), "--node", "node-b",
                     "--server-name", "localhost", check=False)
    assert added.returncode == 1 and "--repair" in added.stderr, added.stderr
    removed = helpline("certs", "signer", "remove-node", "--dir", str(directory), "--node", "node-a", check=False)
    assert removed.returncode == 1
    listed = helpline("certs", "signer", "nodes", "--dir", str(directory)).stdout
    assert "node-a" in listed and "node-b" not in listed, listed

    repaired = helpline("certs", "signer", "audit", "--dir", str(directory), "--repair")
    assert "13 bytes" in repaired.stdout, repaired.stdout
    assert path.read_bytes().startswith(whole) and _events(signer)[-1][0] == "repaired"
    await renew(pki, link, current=CertificateAuthority.load(pki), now=datetime.now(UTC))
    head = helpline("certs", "signer", "audit", "--dir", str(directory), "--head").stdout.split()
    last = list(signer_audit.records(directory))[-1]
    assert head == [str(last["seq"]), last["hash"]] and last["event"] == "issued", (head, last)

    path.unlink()
    gone = helpline("certs", "signer", "audit", "--dir", str(directory), "--verify", check=False)
    assert gone.returncode == 1 and "missing" in gone.stderr, gone.stderr
    port = free_port()
    started = helpline("certs", "signer", "serve", "--dir", str(directory), "--host", "127.0.0.1", "--port",
                       str(port), "--passphrase-file", str(tmp_path / "signer-pass"), check=False, timeout=60)
    assert started.returncode == 1 and "missing" in started.stderr, started.stderr
    assert not path.exists()


async def test_a_signer_made_before_the_trail_is_upgraded_with_audit_begin(tmp_path: Path,
                                                                         signer: dict[str, Path | str]) -> None:
    """A signer directory from before the trail (nodes, no audit.jsonl): serve and a delegate renewal refuse
    naming ``audit --begin``; ``--begin`` records ``begun`` with the nodes already allowed and no earlier trail,
    after which serve starts and the chain verifies; ``--begin`` refuses where a trail exists."""
    directory = Path(signer["dir"])
    assert _join(tmp_path, signer, tmp_path / "srv" / "pki").returncode == 0
    signer_audit.audit_path(directory).unlink()  # what a directory made before the trail looks like

    port = free_port()
    started = helpline("certs", "signer", "serve", "--dir", str(directory), "--host", "127.0.0.1", "--port",
                       str(port), "--passphrase-file", str(tmp_path / "signer-pass"), check=False, timeout=60)
    assert started.returncode == 1 and "audit --dir" in started.stderr and "--begin" in started.stderr, started.stderr
    renewed = helpline("certs", "delegate", "--root", str(tmp_path / "root"), "--out", str(directory),
                       "--signer-name", "127.0.0.1", "--server-name", "localhost", "--days", "30", "--force",
                       "--passphrase-file", str(tmp_path / "pass"),
                       "--signer-passphrase-file", str(tmp_path / "signer-pass"), check=False)
    assert renewed.returncode == 1 and "--begin" in renewed.stderr and "backup" in renewed.stderr, renewed.stderr

    begun = helpline("certs", "signer", "audit", "--dir", str(directory), "--begin")
    assert "1 node(s)" in begun.stdout, begun.stdout
    [first] = signer_audit.records(directory)
    assert (first["event"], first["nodes"], first["earlier_trail"], first["seq"]) == ("begun", ["node-a"], False, 1)
    again = helpline("certs", "signer", "audit", "--dir", str(directory), "--begin", check=False)
    assert again.returncode == 1 and "exists" in again.stderr, again.stderr
    assert list(signer_audit.records(directory)) == [first]

    with spawn("certs", "signer", "serve", "--dir", str(directory), "--host", "127.0.0.1", "--port", str(port),
               "--passphrase-file", str(tmp_path / "signer-pass"), log=tmp_path / "signer2.log") as proc:
        wait_for_port(port, proc, timeout=60)
    assert [r["event"] for r in signer_audit.records(directory)] == ["begun", "started"]
    assert helpline("certs", "signer", "audit", "--dir", str(directory), "--verify").returncode == 0


async def test_an_emptied_or_headless_trail_is_refused_like_a_removed_one(tmp_path: Path,
                                                                          signer: dict[str, Path | str]) -> None:
    """Emptying audit.jsonl (0 bytes) while nodes are allowed: --verify fails, the running signer issues nothing
    (no fresh chain begun by the next refusal or issuance), add-node and --repair change nothing and serve does not
    start. A file whose record 1 is no beginning (lines cut from its start, renumbered) fails --verify too."""
    directory = Path(signer["dir"])
    pki = tmp_path / "srv" / "pki"
    assert _join(tmp_path, signer, pki).returncode == 0
    link = SignerLink.load(pki)
    assert link is not None
    path = signer_audit.audit_path(directory)
    whole = path.read_bytes()
    path.write_bytes(b"")

    checked = helpline("certs", "signer", "audit", "--dir", str(directory), "--verify", check=False)
    assert checked.returncode == 1 and "emptied" in checked.stderr, checked.stderr
    with pytest.raises(SignerRefused, match="audit"):
        await renew(pki, link, current=CertificateAuthority.load(pki), now=datetime.now(UTC))
    csr = build_csr(ec.generate_private_key(ec.SECP256R1())).decode()
    assert await _ask(signer, msgspec.json.encode(IntermediateRequest(node="node-x", csr=csr, token="t"))) == (
        403, "node_not_allowed")
    assert helpline("certs", "signer", "add-node", "--dir", str(directory), "--node", "node-b",
                    "--server-name", "localhost", check=False).returncode == 1
    assert helpline("certs", "signer", "audit", "--dir", str(directory), "--repair", check=False).returncode == 1
    started = helpline("certs", "signer", "serve", "--dir", str(directory), "--host", "127.0.0.1", "--port",
                       str(free_port()), "--passphrase-file", str(tmp_path / "signer-pass"), check=False, timeout=60)
    assert started.returncode == 1 and "emptied" in started.stderr, started.stderr
    assert path.read_bytes() == b""

    # Records 1-2 (delegated, started) cut off and the rest re-chained from the genesis (the chain alone cannot tell; its beginning can).
    records = [json.loads(line) for line in whole.splitlines()[2:]]
    prev = signer_audit.GENESIS
    for seq, record in enumerate(records, 1):
        record.update(seq=seq, prev=prev)
        record["hash"] = prev = signer_audit.record_hash(record)
    path.write_text("".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records))
    headless = helpline("certs", "signer", "audit", "--dir", str(directory), "--verify", check=False)
    assert headless.returncode == 1 and "does not begin" in headless.stderr, headless.stderr
