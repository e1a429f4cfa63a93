"""The device's entry points for self-service fixes and release manifests (AuthorityStore.check_fix/check_release).

No runner exists yet; these are what it will call. The store is the real one on a real directory, the org is
tests/test_authority.py's World, the clock fixed. Each refusal starts from a case the positive control allows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.authority.releases import version_key
from agent.authority.store import AuthorityStore
from protocol.authority import Artifact, ParamLimit, ReleaseManifest, RunBudget, SelfServiceFix, SignedDocument
from tests.test_agent_authority import make_store, update
from tests.test_authority import DAY, NOW, World, make_world, signed

HOUR = 3600.0


@pytest.fixture
def world() -> World:
    return make_world()


def fix_body(**changes: Any) -> SelfServiceFix:
    fields: dict[str, Any] = dict(
        fix_id="fix-print", title="Restart the print queue", action="restart_service",
        params={"service": ParamLimit(type="str", choices=["cups"], required=True),
                "delay": ParamLimit(type="int", minimum=0, maximum=60)},
        budget=RunBudget(max_runs=2, per_seconds=600), devices=["dev-1"], not_before=NOW - DAY,
        not_after=NOW + DAY, issuer="Alice", issued_at=NOW - DAY)
    fields.update(changes)
    return SelfServiceFix(**fields)


def fix_store(tmp_path: Path, world: World, *documents: SignedDocument) -> AuthorityStore:
    store = make_store(tmp_path, world.root.fingerprint)
    store.apply(update(world, *documents), NOW)
    return store


def audited(store: AuthorityStore, event: str) -> list[dict[str, Any]]:
    return [e for e in store.audit.entries() if e["event"] == event]


def test_a_fix_runs_within_its_signed_limits_and_budget_across_restarts(tmp_path: Path, world: World) -> None:
    """Two runs in ten minutes: the third is refused, also after the agent restarts (the ledger is on disk, 0600);
    ten minutes later there is room again. Runs the clock was set back past still count."""
    store = fix_store(tmp_path, world, signed(world, "fix", fix_body(), "alice"))
    first = store.check_fix("fix-print", {"service": "cups"}, NOW)
    assert first.allowed and first.holders == ("Alice",), first.reason
    assert store.check_fix("fix-print", {"service": "cups", "delay": 5}, NOW + 60).allowed
    third = store.check_fix("fix-print", {"service": "cups"}, NOW + 120)
    assert not third.allowed and "run budget used up (2 per 600 s)" in third.reason
    ledger = tmp_path / "authority" / "fix-runs.json"
    assert ledger.stat().st_mode & 0o777 == 0o600

    restarted = make_store(tmp_path, world.root.fingerprint)
    assert "run budget used up" in restarted.check_fix("fix-print", {"service": "cups"}, NOW + 180).reason
    assert "run budget used up" in restarted.check_fix("fix-print", {"service": "cups"}, NOW - 600).reason
    assert restarted.check_fix("fix-print", {"service": "cups"}, NOW + 60 + 601).allowed
    assert [e["event"] for e in restarted.audit.entries() if e["event"].startswith("fix.")] == [
        "fix.allowed", "fix.allowed", "fix.refused", "fix.refused", "fix.refused", "fix.allowed"]


@pytest.mark.parametrize(("params", "reason"), [
    ({}, "parameter 'service' is required"),
    ({"service": "sshd"}, "is not one of the allowed choices"),
    ({"service": "cups", "delay": 61}, "must be at most 60"),
    ({"service": "cups", "rm": "-rf /"}, "unknown parameters: rm"),
])
def test_parameters_outside_the_signed_limits_are_refused(tmp_path: Path, world: World, params: dict[str, Any],
                                                          reason: str) -> None:
    """Each parameter outside what the approvers signed is refused (audited) and takes no run of the budget."""
    store = fix_store(tmp_path, world, signed(world, "fix", fix_body(), "alice"))
    verdict = store.check_fix("fix-print", params, NOW)
    assert not verdict.allowed and reason in verdict.reason and verdict.reason.startswith("fix fix-print: ")
    assert audited(store, "fix.refused")[-1]["reason"] == verdict.reason
    assert not (tmp_path / "authority" / "fix-runs.json").exists()


def test_unsigned_forged_expired_and_misaddressed_fixes_are_refused(tmp_path: Path, world: World) -> None:
    """A fix the device never verified, one signed by another org, an expired one, one for another device, one
    approved by a single approver where a script needs two — and a grant named as a fix — are all refused."""
    other = make_world()
    store = fix_store(tmp_path, world,
                      signed(world, "fix", fix_body(fix_id="fix-late", not_before=NOW - 2 * DAY,
                                                    not_after=NOW + 60), "alice"),
                      signed(other, "fix", fix_body(fix_id="fix-forged"), "alice"),
                      signed(world, "fix", fix_body(fix_id="fix-elsewhere", devices=["dev-2"]), "alice"),
                      signed(world, "fix", fix_body(fix_id="fix-script", action="script", script_sha256="ab" * 32),
                             "alice"))
    cases = {
        "fix-none": "no approver-signed fix fix-none has reached this device",
        "fix-forged": "no certificate for credential",
        "fix-elsewhere": "does not concern this device",
        "fix-script": "needs 2 distinct approvers, has 1",
    }
    for fix_id, reason in cases.items():
        verdict = store.check_fix(fix_id, {"service": "cups"}, NOW)
        assert not verdict.allowed and reason in verdict.reason, (fix_id, verdict.reason)
    assert store.check_fix("fix-late", {"service": "cups"}, NOW).allowed
    expired = store.check_fix("fix-late", {"service": "cups"}, NOW + 120)
    assert not expired.allowed and "expired" in expired.reason
    assert len(audited(store, "fix.refused")) == len(cases) + 1


def test_an_unreadable_ledger_refuses_rather_than_forgets(tmp_path: Path, world: World) -> None:
    """A damaged run ledger refuses every fix (fail closed) instead of starting the budget afresh."""
    store = fix_store(tmp_path, world, signed(world, "fix", fix_body(), "alice"))
    assert store.check_fix("fix-print", {"service": "cups"}, NOW).allowed
    (tmp_path / "authority" / "fix-runs.json").write_text("{not json")
    verdict = store.check_fix("fix-print", {"service": "cups"}, NOW + 1)
    assert not verdict.allowed and "fix run ledger" in verdict.reason and "unreadable" in verdict.reason


# --- release manifests ----------------------------------------------------------------------------------------


def manifest(version: str = "0.2.0", **changes: Any) -> ReleaseManifest:
    fields: dict[str, Any] = dict(version=version, released_at=NOW - HOUR, not_after=NOW + 30 * DAY,
                                  artifacts=[Artifact(name="helpline-0.2.0-py3-none-any.whl", sha256="cd" * 32,
                                                      size=123456),
                                             Artifact(name="helpline-0.2.0.tar.gz", sha256="ef" * 32, size=99)])
    fields.update(changes)
    return ReleaseManifest(**fields)


def test_a_newer_signed_release_is_allowed_with_the_digests_to_check(tmp_path: Path, world: World) -> None:
    """The positive control: a newer release one approver signed gives back every artifact's SHA-256 (audited)."""
    store = make_store(tmp_path, world.root.fingerprint)
    store.apply(update(world), NOW)
    check = store.check_release(signed(world, "release", manifest(), "alice"), "0.1.0", NOW)
    assert check.allowed, check.verdict.reason
    assert check.digests == {"helpline-0.2.0-py3-none-any.whl": "cd" * 32, "helpline-0.2.0.tar.gz": "ef" * 32}
    assert check.manifest is not None and check.manifest.version == "0.2.0"
    assert audited(store, "release.allowed")[0]["version"] == "0.2.0"


REFUSED_RELEASES: list[tuple[str, Any, str, str]] = [
    ("same version", lambda w: signed(w, "release", manifest(), "alice"), "0.2.0", "is not newer"),
    ("downgrade", lambda w: signed(w, "release", manifest(), "alice"), "0.10.0", "(no downgrades)"),
    ("pre-release of the running version", lambda w: signed(w, "release", manifest("0.2.0-rc.1"), "alice"), "0.2.0",
     "is not newer"),
    ("unsigned", lambda w: signed(w, "release", manifest()), "0.1.0", "needs 1 distinct approvers, has 0"),
    ("forged", lambda w: signed(make_world(), "release", manifest(), "alice"), "0.1.0", "no certificate for"),
    ("expired", lambda w: signed(w, "release", manifest(released_at=NOW - 2 * DAY, not_after=NOW - 1), "alice"),
     "0.1.0", "expired at"),
    ("released in the future", lambda w: signed(w, "release", manifest(released_at=NOW + HOUR), "alice"), "0.1.0",
     "released in the future"),
    ("signed by a technician", lambda w: signed(w, "release", manifest(), "dave"), "0.1.0", "approval refused"),
    ("a version that cannot be ordered", lambda w: signed(w, "release", manifest("nightly"), "alice"), "0.1.0",
     "cannot be ordered"),
    ("a grant passed as a manifest", lambda w: SignedDocument(kind="grant", body=signed(
        w, "release", manifest(), "alice").body, approvals=[]), "0.1.0", "not a release manifest"),
    ("an artifact listed twice", lambda w: signed(w, "release", manifest(artifacts=[
        Artifact(name="a.whl", sha256="cd" * 32, size=1), Artifact(name="a.whl", sha256="ef" * 32, size=1)]),
        "alice"), "0.1.0", "lists an artifact name twice"),
]


@pytest.mark.parametrize(("document", "running", "reason"), [(d, r, why) for _, d, r, why in REFUSED_RELEASES],
                         ids=[name for name, *_ in REFUSED_RELEASES])
def test_refused_release_manifests(tmp_path: Path, world: World, document: Any, running: str, reason: str) -> None:
    """Each bad manifest is refused with the reason, audited on the device, and gives no digests."""
    store = make_store(tmp_path, world.root.fingerprint)
    store.apply(update(world), NOW)
    check = store.check_release(document(world), running, NOW)
    assert not check.allowed and reason in check.verdict.reason, check.verdict.reason
    assert check.digests == {} and audited(store, "release.refused")[-1]["reason"] == check.verdict.reason


def test_a_stale_revocation_list_refuses_releases(tmp_path: Path, world: World) -> None:
    """Releases fail closed like every other document when the revocation list went stale."""
    store = make_store(tmp_path, world.root.fingerprint)
    store.apply(update(world), NOW)
    check = store.check_release(signed(world, "release", manifest(), "alice"), "0.1.0", NOW + 2 * HOUR)
    assert not check.allowed and "revocation list is stale" in check.verdict.reason


@pytest.mark.parametrize(("lower", "higher"), [
    ("0.1.0", "0.2.0"), ("0.9.0", "0.10.0"), ("1.0.0-rc.1", "1.0.0"), ("1.0.0-alpha", "1.0.0-alpha.1"),
    ("1.0.0-alpha.1", "1.0.0-alpha.beta"), ("1.0.0-beta.2", "1.0.0-beta.11"), ("1.0.0-rc.1", "1.0.0-rc.1.1"),
    ("2.0.0", "10.0.0"),
])
def test_versions_order_as_semver(lower: str, higher: str) -> None:
    """SemVer 2.0 precedence (numeric parts numerically, pre-releases before the release)."""
    low, high = version_key(lower), version_key(higher)
    assert low is not None and high is not None and low < high
    assert version_key("1.0.0+build.5") == version_key("1.0.0")
    assert version_key("1.0") is None and version_key("01.0.0") is None and version_key("v1.0.0") is None
