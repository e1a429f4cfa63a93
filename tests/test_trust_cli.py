"""The offline ceremonies through the real ``helpline trust`` / ``helpline approve`` commands.

Each test runs the CLI as an administrator would (passphrases from files), then checks the files
it wrote with the same verification code the agents run.
"""

from __future__ import annotations

import hashlib
import json
import stat
import time
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.cose import ES256
from fido2.utils import websafe_encode

from certs import ceremony
from certs.authority import verify_cert, verify_rotation
from protocol.authority import (
    AuthorityPolicy,
    PasskeyKey,
    RootInfo,
    RootRotation,
    SignedCert,
    SignedDocument,
    key_fingerprint,
)
from tests.procs import helpline

PASSPHRASE = "correct horse battery staple"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def org(tmp_path: Path) -> Path:
    """A trust directory made by ``helpline trust init``."""
    (tmp_path / "pass.txt").write_text(PASSPHRASE + "\n")
    helpline("trust", "init", "--out", str(tmp_path / "root"), "--passphrase-file", str(tmp_path / "pass.txt"))
    return tmp_path


def run(org: Path, *args: str, check: bool = True) -> str:
    result = helpline(*args, "--passphrase-file", str(org / "pass.txt"), check=check)
    return result.stdout + result.stderr


def fingerprint_of(public_pem: Path) -> str:
    return key_fingerprint(ceremony.load_public_key_pem(public_pem.read_bytes()))


def keygen_and_certify(org: Path, name: str, kind: str) -> tuple[Path, Path]:
    """A CLI-held key for ``name`` and its certificate (the right fingerprint given)."""
    key = org / f"{name}.key"
    run(org, "trust", "keygen", "--out", str(key))
    pub = key.with_name(key.name + ".pub")
    cert = org / "root" / "certs" / f"{name}-0001.json"
    run(org, "trust", "certify", "--dir", str(org / "root"), "--kind", kind, "--name", name.title(),
        "--public-key", str(pub), "--days", "30", "--fingerprint", fingerprint_of(pub), "--id", f"{name}-0001")
    return key, cert


def test_init_writes_an_encrypted_root_and_prints_its_fingerprint(tmp_path: Path) -> None:
    """init: root.key encrypted, 0600 in a 0700 directory; the printed fingerprint is the key's."""
    (tmp_path / "pass.txt").write_text(PASSPHRASE)
    out = helpline("trust", "init", "--out", str(tmp_path / "root"), "--passphrase-file",
                   str(tmp_path / "pass.txt")).stdout
    root_dir = tmp_path / "root"
    assert mode(root_dir / "root.key") == 0o600 and mode(root_dir) == 0o700
    pem = (root_dir / "root.key").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in pem
    root = msgspec.json.decode((root_dir / "root.json").read_bytes(), type=RootInfo)
    key = ceremony.decrypt_key(pem, PASSPHRASE.encode())
    ceremony.check_root_key(key, root)
    assert root.fingerprint in out
    with pytest.raises(ceremony.CeremonyError, match="cannot decrypt"):
        ceremony.decrypt_key(pem, b"not the passphrase at all")
    again = helpline("trust", "init", "--out", str(root_dir), "--passphrase-file", str(tmp_path / "pass.txt"),
                     check=False)
    assert again.returncode == 1 and "already holds a root key" in again.stderr
    assert (root_dir / "root.key").read_bytes() == pem


def test_certify_requires_the_matching_fingerprint(org: Path) -> None:
    """certify prints the key's fingerprint and issues only when --fingerprint matches it."""
    run(org, "trust", "keygen", "--out", str(org / "alice.key"))
    assert mode(org / "alice.key") == 0o600 and mode(org / "alice.key.pub") == 0o644
    pub = org / "alice.key.pub"
    actual = fingerprint_of(pub)
    base = ["trust", "certify", "--dir", str(org / "root"), "--kind", "approver", "--name", "Alice", "--public-key",
            str(pub), "--days", "30", "--id", "alice-0001"]
    cert = org / "root" / "certs" / "alice-0001.json"
    missing = helpline(*base, "--passphrase-file", str(org / "pass.txt"), check=False)
    assert missing.returncode == 1 and actual in missing.stdout and "--fingerprint" in missing.stderr
    wrong = helpline(*base, "--fingerprint", "ab" * 32, "--passphrase-file", str(org / "pass.txt"), check=False)
    assert wrong.returncode == 1 and "does not match" in wrong.stderr
    assert not cert.exists()
    bad_pass = org / "bad.txt"
    bad_pass.write_text("wrong passphrase here")
    refused = helpline(*base, "--fingerprint", actual, "--passphrase-file", str(bad_pass), check=False)
    assert refused.returncode == 1 and "cannot decrypt" in refused.stderr and not cert.exists()
    grouped = " ".join(actual[i:i + 4] for i in range(0, 64, 4)).upper()  # as read aloud from a screen
    helpline(*base, "--fingerprint", grouped, "--passphrase-file", str(org / "pass.txt"))
    root = msgspec.json.decode((org / "root" / "root.json").read_bytes(), type=RootInfo)
    issued = verify_cert(msgspec.json.decode(cert.read_bytes(), type=SignedCert), root=root)
    assert not isinstance(issued, str)
    assert (issued.kind, issued.holder, issued.credential_id) == ("approver", "Alice", "alice-0001")
    assert 29 * 86400 < issued.not_after - time.time() <= 30 * 86400


def test_certify_a_passkey(org: Path) -> None:
    """A passkey's COSE key (base64url, as the console shows it) is certified with its rpId and origin."""
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    cose = cbor.encode(dict(ES256.from_cryptography_key(public)))  # type: ignore[no-untyped-call]
    (org / "carol.cose").write_text(websafe_encode(cose) + "\n")
    expected = hashlib.sha256(cose).hexdigest()
    args = ["trust", "certify", "--dir", str(org / "root"), "--kind", "technician", "--name", "Carol", "--cose-key",
            str(org / "carol.cose"), "--rp-id", "helpline.example", "--webauthn-id", "Y3JlZC0x", "--origin",
            "https://helpline.example:8444", "--days", "7", "--id", "carol-0001"]
    shown = run(org, *args, check=False)
    fingerprint = shown.split("sha256): ")[1].split()[0]
    assert fingerprint == expected
    run(org, *args, "--fingerprint", fingerprint)
    root = msgspec.json.decode((org / "root" / "root.json").read_bytes(), type=RootInfo)
    signed = msgspec.json.decode((org / "root" / "certs" / "carol-0001.json").read_bytes(), type=SignedCert)
    issued = verify_cert(signed, root=root)
    assert not isinstance(issued, str) and isinstance(issued.public_key, PasskeyKey)
    assert issued.public_key.key_bytes() == cose and issued.public_key.rp_id == "helpline.example"
    (org / "junk.cose").write_text("bm90LWNib3I")
    junk_args = [str(org / "junk.cose") if a == str(org / "carol.cose") else a for a in args]
    junk = run(org, *junk_args, "--fingerprint", "00" * 32, check=False)
    assert "not a COSE public key" in junk


def test_split_into_three_and_recover_from_two(org: Path) -> None:
    """split 2-of-3: share files 0600; any two rebuild the same root key, one alone does not."""
    run(org, "trust", "split", "--dir", str(org / "root"), "--shares", "3", "--threshold", "2", "--out",
        str(org / "shares"))
    shares = sorted((org / "shares").glob("share-*.txt"))
    assert len(shares) == 3 and all(mode(p) == 0o600 for p in shares) and mode(org / "shares") == 0o700
    root = msgspec.json.decode((org / "root" / "root.json").read_bytes(), type=RootInfo)
    out = run(org, "trust", "recover", "--share", str(shares[0]), "--share", str(shares[2]), "--root",
              str(org / "root" / "root.json"), "--out", str(org / "recovered"))
    assert root.fingerprint in out
    assert mode(org / "recovered" / "root.key") == 0o600
    recovered = ceremony.decrypt_key((org / "recovered" / "root.key").read_bytes(), PASSPHRASE.encode())
    ceremony.check_root_key(recovered, root)
    one = run(org, "trust", "recover", "--share", str(shares[1]), "--out", str(org / "one"), check=False)
    assert "cannot recover" in one and not (org / "one" / "root.key").exists()


def test_rotate_hands_over_and_reissues(org: Path) -> None:
    """rotate: the new root is signed by the old one (agents pinned to the old accept it); certificates move."""
    keygen_and_certify(org, "alice", "approver")
    old = msgspec.json.decode((org / "root" / "root.json").read_bytes(), type=RootInfo)
    out = run(org, "trust", "rotate", "--dir", str(org / "root"), "--out", str(org / "root2"),
              "--new-passphrase-file", str(org / "pass.txt"), "--reason", "yearly")
    new = msgspec.json.decode((org / "root2" / "root.json").read_bytes(), type=RootInfo)
    assert new.fingerprint in out and new.fingerprint != old.fingerprint
    assert mode(org / "root2" / "root.key") == 0o600
    rotation = msgspec.json.decode((org / "root2" / "rotation.json").read_bytes(), type=RootRotation)
    verdict = verify_rotation(rotation, pinned_root_fingerprint=old.fingerprint, root=old, now=time.time(),
                              policy=AuthorityPolicy())
    assert verdict.allowed and verdict.new_root == new
    moved = msgspec.json.decode((org / "root2" / "certs" / "alice-0001.json").read_bytes(), type=SignedCert)
    assert not isinstance(verify_cert(moved, root=new), str)
    assert isinstance(verify_cert(moved, root=old), str)


def test_approve_revoke_and_verify(org: Path) -> None:
    """A group grant: one approval is refused, two allowed; a revocation list then refuses it."""
    alice_key, alice_cert = keygen_and_certify(org, "alice", "approver")
    bob_key, bob_cert = keygen_and_certify(org, "bob", "approver")
    rev_key, rev_cert = keygen_and_certify(org, "desk", "revoker")
    root = msgspec.json.decode((org / "root" / "root.json").read_bytes(), type=RootInfo)
    now = int(time.time())
    body = {"grant_id": "grant-0001", "groups": ["lab"], "technician_names": ["Dave"], "actions": ["view"],
            "not_before": now - 60, "not_after": now + 86400, "issuer": "Alice", "issued_at": now,
            "reason": "evil\u202etxt.exe"}
    (org / "body.json").write_text(json.dumps(body))
    document = org / "grant.json"
    helpline("approve", "draft", str(org / "body.json"), "--kind", "grant", "--out", str(document))
    before = document.read_bytes()
    unconfirmed = run(org, "approve", "sign", str(document), "--key", str(alice_key), "--cert", str(alice_cert),
                      check=False)
    assert "pass --yes" in unconfirmed and document.read_bytes() == before
    assert "grant-0001" in unconfirmed and "evil\\u202etxt.exe" in unconfirmed and "\u202e" not in unconfirmed
    signed = run(org, "approve", "sign", str(document), "--key", str(alice_key), "--cert", str(alice_cert), "--yes")
    assert "signed as Alice" in signed
    wrong_key = run(org, "approve", "sign", str(document), "--key", str(bob_key), "--cert", str(alice_cert), "--yes",
                    check=False)
    assert "is not the key" in wrong_key
    revocations = org / "revocations.json"
    not_a_revoker = run(org, "trust", "revoke", "--key", str(alice_key), "--cert", str(alice_cert), "--out",
                        str(revocations), check=False)
    assert "needs revoker" in not_a_revoker and not revocations.exists()
    run(org, "trust", "revoke", "--key", str(rev_key), "--cert", str(rev_cert), "--out", str(revocations))
    assert mode(revocations) == 0o644

    def verify(revocation_file: Path) -> str:
        result = helpline("trust", "verify", str(document), "--dir", str(org / "root"), "--pin", root.fingerprint,
                          "--revocations", str(revocation_file), check=False)
        return result.stdout + result.stderr

    assert "needs 2 distinct approvers, has 1" in verify(revocations)
    run(org, "approve", "sign", str(document), "--key", str(bob_key), "--cert", str(bob_cert), "--yes")
    assert "allowed: grant grant-0001 approved by Alice, Bob" in verify(revocations)
    approvals = msgspec.json.decode(document.read_bytes(), type=SignedDocument).approvals
    assert [a.credential_id for a in approvals] == ["alice-0001", "bob-0001"]
    later = org / "revocations-2.json"
    run(org, "trust", "revoke", "--key", str(rev_key), "--cert", str(rev_cert), "--previous", str(revocations),
        "--document", "grant-0001", "--out", str(later))
    assert "refused: grant grant-0001 has been revoked" in verify(later)
    too_long = run(org, "trust", "revoke", "--key", str(rev_key), "--cert", str(rev_cert), "--hours", "1000",
                   "--out", str(org / "long.json"), check=False)
    assert "--hours" in too_long and not (org / "long.json").exists()
