"""The agent's authority store and device audit on their own: what an ``authority.update`` leaves
the device holding, and every check unattended work makes against it.

The org (root, approvers, technicians, revoker) comes from tests/test_authority.py's World; the
store is the real one, on a real directory, with a fixed clock. End-to-end with real processes:
tests/test_authority_sessions.py.
"""

from __future__ import annotations

import json
import stat
from datetime import datetime
from pathlib import Path

import msgspec
import pytest

from agent.authority.audit import DeviceAudit, verify
from agent.authority.store import NO_PIN, AuthorityStore, parse_pin
from certs import ceremony
from protocol.authority import CredentialCert, TechnicianStatement, decode_canonical
from protocol.authority_messages import AuthorityUpdate
from tests.test_authority import DAY, NOW, World, grant_body, make_world, signed

LOCAL = datetime(2025, 6, 15, 12, 0)
DEVICE, GROUP = "dev-1", "lab"


def make_store(tmp_path: Path, pin: str | None) -> AuthorityStore:
    audit = DeviceAudit(tmp_path / "device-audit.jsonl", clock=lambda: NOW)
    return AuthorityStore(tmp_path / "authority", pin=pin, device_id=DEVICE, group=lambda: GROUP, audit=audit)


def update(world: World, *documents: object, **changes: object) -> AuthorityUpdate:
    fields: dict[str, object] = dict(root=world.root, certs=world.certs, revocations=world.revocations,
                                     documents=list(documents), complete=True)
    fields.update(changes)
    return AuthorityUpdate(**fields)  # type: ignore[arg-type]


def events(store: AuthorityStore) -> list[tuple[str, str]]:
    return [(e["event"], e.get("reason", "")) for e in store.audit.entries()]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def world() -> World:
    return make_world()


def test_update_keeps_what_verifies_and_concerns_this_device(tmp_path: Path, world: World) -> None:
    """Good grant kept; a grant for another device, an under-approved group grant and a forged one refused,
    each audited with its reason; state 0600 in a 0700 directory, audit 0600 and intact."""
    store = make_store(tmp_path, world.root.fingerprint)
    good = signed(world, "grant", grant_body(world), "alice")
    elsewhere = signed(world, "grant", grant_body(world, grant_id="grant-0002", devices=["dev-2"]), "alice")
    one_eye = signed(world, "grant", grant_body(world, grant_id="grant-0003", devices=[], groups=[GROUP]), "alice")
    other = make_world()
    forged = signed(other, "grant", grant_body(other, grant_id="grant-0004"), "alice")
    status = store.apply(update(world, good, elsewhere, one_eye, forged), NOW)
    assert status.accepted == ["grant-0001"] and status.unattended_ok and status.problem == ""
    reasons = {r.document_id: r.reason for r in status.refused}
    assert reasons["grant-0002"] == "grant grant-0002 does not concern this device"
    assert "needs 2 distinct approvers, has 1" in reasons["grant-0003"]
    assert "no certificate for credential" in reasons["grant-0004"]
    logged = events(store)
    assert ("document.accepted", "") in logged
    assert sum(1 for event, _ in logged if event == "document.refused") == 3
    assert mode(tmp_path / "authority") == 0o700 and mode(tmp_path / "authority" / "authority.json") == 0o600
    assert mode(tmp_path / "device-audit.jsonl") == 0o600
    # The same update again audits nothing new (a reconnect is not a new decision).
    store.apply(update(world, good, elsewhere, one_eye, forged), NOW)
    assert len(events(store)) == len(logged)
    assert verify(tmp_path / "device-audit.jsonl").intact
    # What was held survives a restart; a refused document's reason is still known.
    again = make_store(tmp_path, world.root.fingerprint)
    assert again.check_grant("grant-0001", action="view", now=NOW, local=LOCAL).grant is not None
    refused = again.check_grant("grant-0003", action="view", now=NOW, local=LOCAL).verdict
    assert not refused.allowed and "needs 2 distinct approvers" in refused.reason


def test_grant_scope_is_checked_at_use(tmp_path: Path, world: World) -> None:
    """Action, not-before and windows are checked when the grant is used, not only when it arrived."""
    store = make_store(tmp_path, world.root.fingerprint)
    store.apply(update(world, signed(world, "grant", grant_body(world, actions=["view"]), "alice")), NOW)
    assert store.check_grant("grant-0001", action="view", now=NOW, local=LOCAL).grant is not None
    control = store.check_grant("grant-0001", action="control", now=NOW, local=LOCAL).verdict
    assert control.reason == "grant grant-0001 does not allow 'control'"
    missing = store.check_grant("grant-9999", action="view", now=NOW, local=LOCAL).verdict
    assert "no approver-signed grant grant-9999" in missing.reason


def test_no_pin_honours_nothing(tmp_path: Path, world: World) -> None:
    """Installed without a pin: the update is not taken, and the reason says why."""
    store = make_store(tmp_path, None)
    status = store.apply(update(world, signed(world, "grant", grant_body(world), "alice")), NOW)
    assert status.accepted == [] and not status.unattended_ok and status.problem == NO_PIN
    assert store.check_grant("grant-0001", action="view", now=NOW, local=LOCAL).verdict.reason == NO_PIN


def test_substituted_root_is_refused_and_fails_closed(tmp_path: Path, world: World) -> None:
    """A server offering another root (with its own certificates and documents) is refused and audited; while it
    keeps offering it, nothing unattended is honoured, with that reason."""
    store = make_store(tmp_path, world.root.fingerprint)
    store.apply(update(world, signed(world, "grant", grant_body(world), "alice")), NOW)
    other = make_world()
    status = store.apply(update(other, signed(other, "grant", grant_body(other), "alice")), NOW)
    assert not status.unattended_ok and status.problem.startswith("the server offered another root: root ")
    assert "is not the root this device was installed with" in status.problem
    assert ("root.refused", status.problem) in events(store)
    verdict = store.check_grant("grant-0001", action="view", now=NOW, local=LOCAL).verdict
    assert not verdict.allowed and verdict.reason == status.problem
    healed = store.apply(update(world, signed(world, "grant", grant_body(world), "alice")), NOW)
    assert healed.unattended_ok and healed.accepted == ["grant-0001"]


def test_revocations_never_go_back_and_stale_fails_closed(tmp_path: Path, world: World) -> None:
    """A newer list revokes; an older one after it is refused; an expired list refuses with "stale"."""
    store = make_store(tmp_path, world.root.fingerprint)
    grant = signed(world, "grant", grant_body(world), "alice")
    world.revoke(sequence=5)
    store.apply(update(world, grant), NOW)
    assert store.revocation_sequence == 5
    world.revoke(sequence=3, documents=())
    store.apply(update(world, grant), NOW)
    assert store.revocation_sequence == 5
    assert any(e == "revocations.refused" and "lists never go back" in r for e, r in events(store))
    world.revoke(sequence=6, documents=("grant-0001",))
    status = store.apply(update(world, grant), NOW)
    assert status.accepted == [] and "has been revoked" in status.refused[0].reason
    world.revoke(sequence=7, expires_at=NOW + 600)
    store.apply(update(world, grant), NOW)
    later = NOW + 601
    verdict = store.check_grant("grant-0001", action="view", now=later, local=LOCAL).verdict
    assert not verdict.allowed and verdict.reason.startswith("revocation list is stale (expired at ")


def test_rotation_moves_the_pin(tmp_path: Path, world: World) -> None:
    """A rotation signed by the pinned root moves the pin (kept across restarts); certificates of the new root
    count, the old root is no longer "another root"."""
    store = make_store(tmp_path, world.root.fingerprint)
    new_key = ceremony.generate_key()
    new_root = ceremony.new_root(new_key, name="Example Org 2", now=NOW - DAY)
    rotation = ceremony.rotate_root(world.root_key, world.root, new_root, now=NOW - DAY)
    moved = [ceremony.sign_cert(new_key, c) for c in _certs_moved(world, new_root.fingerprint)]
    old_root = world.root
    world.root, world.root_key, world.certs = new_root, new_key, moved
    world.revoke()
    status = store.apply(update(world, signed(world, "grant", grant_body(world), "alice"), root=old_root,
                                rotations=[rotation]), NOW)
    assert status.root_fingerprint == new_root.fingerprint and status.unattended_ok, status
    assert status.accepted == ["grant-0001"]
    assert any(e == "root.rotated" for e, _ in events(store))
    assert make_store(tmp_path, old_root.fingerprint).pin == new_root.fingerprint
    # Another configured pin (a redeployment) starts afresh.
    assert make_store(tmp_path, "ab" * 32).pin == "ab" * 32


def _certs_moved(world: World, fingerprint: str) -> list[CredentialCert]:
    return [msgspec.structs.replace(decode_canonical(c.body, CredentialCert), root_fingerprint=fingerprint)
            for c in world.certs]


def test_technician_proof(tmp_path: Path, world: World) -> None:
    """Only a proof over this device's nonce, by a technician the grant names, verifies."""
    store = make_store(tmp_path, world.root.fingerprint)
    store.apply(update(world, signed(world, "grant", grant_body(world), "alice")), NOW)
    grant = store.check_grant("grant-0001", action="view", now=NOW, local=LOCAL).grant
    assert grant is not None

    def proof(label: str, nonce: str) -> object:
        statement = TechnicianStatement(nonce=nonce, device_id=DEVICE, action="view", document_id="grant-0001",
                                        signed_at=NOW)
        return ceremony.sign_technician_statement(world.keys[label], world.ids[label], statement)

    nonce = "n" * 32
    ok = store.verify_proof(proof("dave", nonce), grant, nonce=nonce, action="view", now=NOW)  # type: ignore[arg-type]
    assert ok.allowed and ok.holders == ("Dave",)
    replay = store.verify_proof(proof("dave", "m" * 32), grant, nonce=nonce, action="view", now=NOW)  # type: ignore[arg-type]
    assert replay.reason == "technician proof is for another nonce (replayed or stale)"
    stranger = store.verify_proof(proof("bob", nonce), grant, nonce=nonce, action="view", now=NOW)  # type: ignore[arg-type]
    assert not stranger.allowed and "technician" in stranger.reason


def test_audit_chain_detects_edits_and_deletions(tmp_path: Path) -> None:
    """Each line names the hash of the one before: an edited or removed line breaks the chain there."""
    path = tmp_path / "device-audit.jsonl"
    audit = DeviceAudit(path)
    for number in range(4):
        audit.record("document.refused", document_id=f"g-{number}", reason="line\nbreak \x1b[31m")
    assert verify(path).intact and verify(path).lines == 4
    assert len(path.read_text().splitlines()) == 4  # control characters never break a line
    DeviceAudit(path).record("after.restart")  # the chain continues across restarts
    assert verify(path).intact
    lines = path.read_text().splitlines()
    edited = json.loads(lines[1]) | {"reason": "nothing to see"}
    path.write_text("\n".join([lines[0], json.dumps(edited), *lines[2:]]) + "\n")
    assert not verify(path).intact and "line 3" in verify(path).problem
    path.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    assert not verify(path).intact


def test_parse_pin() -> None:
    """Pins are normalised (colons, case) and malformed ones refused."""
    assert parse_pin("AB:" * 31 + "AB") == "ab" * 32
    assert parse_pin(None) is None and parse_pin("  ") is None
    with pytest.raises(ValueError):
        parse_pin("xyz")


def _legacy_store(tmp_path: Path, old_key: object) -> tuple[AuthorityStore, Path, list[str]]:
    """A device enrolled before the org root: grant.pub of ``old_key`` in its state, no pin."""
    from cryptography.hazmat.primitives import serialization

    from agent.authority.legacy import LegacyKey

    grant_pub = tmp_path / "grant.pub"
    grant_pub.write_bytes(old_key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    kept: list[str] = []
    audit = DeviceAudit(tmp_path / "device-audit.jsonl", clock=lambda: NOW)
    legacy = LegacyKey(grant_pub, keep_pin=kept.append, audit=audit)
    store = AuthorityStore(tmp_path / "authority", pin=None, device_id=DEVICE, group=lambda: GROUP, audit=audit,
                           legacy=legacy)
    return store, grant_pub, kept


def test_the_old_grant_keys_hand_over_is_taken_once_and_only_from_that_key(tmp_path: Path, world: World) -> None:
    """A hand-over signed by another key is refused (audited, reported, grant.pub kept, no pin); the one signed by
    the device's own grant.pub pins the root, deletes grant.pub, and the store honours the root; a later
    hand-over to another root changes nothing."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from certs.legacy import sign_handover

    old_key, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    store, grant_pub, kept = _legacy_store(tmp_path, old_key)
    status = store.apply(update(world, handover=sign_handover(stranger, world.root, now=NOW)), NOW)
    assert status.root_fingerprint is None and not status.unattended_ok
    assert "not by the grant key this device was enrolled with" in status.problem
    assert grant_pub.exists() and kept == [] and "root.handover_refused" in [e for e, _ in events(store)]

    status = store.apply(update(world, handover=sign_handover(old_key, world.root, now=NOW)), NOW)
    assert status.root_fingerprint == world.root.fingerprint and status.unattended_ok, status
    assert kept == [world.root.fingerprint] and not grant_pub.exists()
    names = [e for e, _ in events(store)]
    assert names[names.index("root.adopted") + 1] == "legacy_key.removed"

    other = make_world()
    status = store.apply(update(world, handover=sign_handover(old_key, other.root, now=NOW)), NOW)
    assert status.root_fingerprint == world.root.fingerprint and status.unattended_ok
    assert kept == [world.root.fingerprint] and verify(tmp_path / "device-audit.jsonl").intact


def test_a_device_with_a_pin_deletes_a_left_over_grant_pub(tmp_path: Path, world: World) -> None:
    """A device given a pin by its configuration no longer keeps the old grant key: it is deleted (audited)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.authority.legacy import LegacyKey

    grant_pub = tmp_path / "grant.pub"
    grant_pub.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    audit = DeviceAudit(tmp_path / "device-audit.jsonl", clock=lambda: NOW)
    AuthorityStore(tmp_path / "authority", pin=world.root.fingerprint, device_id=DEVICE, group=lambda: GROUP,
                   audit=audit, legacy=LegacyKey(grant_pub, keep_pin=lambda _pin: None, audit=audit))
    assert not grant_pub.exists() and [e["event"] for e in audit.entries()] == ["legacy_key.removed"]
