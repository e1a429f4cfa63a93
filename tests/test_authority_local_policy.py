"""The device admin's ``[authority]`` table: it may tighten the rules for signed documents, never loosen them.

Parsing first (every key, every way to loosen or garble it), then the store under a tightened policy (each
rule refuses what the defaults allow), then a real ``helpline agent run`` that refuses to start on an unusable
policy file and says why.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from agent.authority import build
from agent.authority.audit import DeviceAudit
from agent.authority.store import AuthorityStore
from agent.config import AgentConfig
from agent.policy import LocalPolicy, PolicyError, parse_authority
from agent.state import AgentState
from certs import ceremony
from protocol.authority import DOCUMENT_KINDS, AuthorityPolicy, TechnicianStatement
from tests.harness import enroll_agent, running_server
from tests.procs import helpline
from tests.test_agent_authority import DEVICE, GROUP, LOCAL, update
from tests.test_authority import DAY, NOW, World, grant_body, make_world, signed


def test_the_table_tightens_every_rule() -> None:
    """Every key is read into the AuthorityPolicy the store uses; kinds named in four_eyes_for add to the defaults."""
    policy = LocalPolicy.parse(textwrap.dedent("""
        require_prompt = true
        [authority]
        min_approvals = 2
        four_eyes_for = ["grant", "release"]
        require_user_verification = true
        max_grant_lifetime_s = 86400
        max_revocation_validity_s = 3600
        proof_max_age_s = 30
        clock_skew_s = 5
    """))
    assert policy.require_prompt
    assert policy.authority == AuthorityPolicy(
        min_approvals=2, four_eyes_kinds=frozenset({"approver_set", "grant", "release"}), max_grant_lifetime_s=86400,
        max_revocation_validity_s=3600, proof_max_age_s=30, clock_skew_s=5)
    assert parse_authority({"four_eyes_for": ["all"]}).four_eyes_kinds == DOCUMENT_KINDS
    assert LocalPolicy.parse("").authority == AuthorityPolicy()
    assert parse_authority({"max_grant_lifetime_s": 30 * 86400}) == AuthorityPolicy()  # the default itself


@pytest.mark.parametrize(("table", "message"), [
    ("min_approvals = 0", "min_approvals must be a whole number from 1 to 16"),
    ("min_approvals = 17", "from 1 to 16"),
    ("min_approvals = 1.5", "whole number"),
    ("min_approvals = true", "whole number"),
    ('four_eyes_for = ["grants"]', "unknown kinds grants"),
    ('four_eyes_for = "all"', "must be a list"),
    ("require_user_verification = false", "can only be true"),
    ("max_grant_lifetime_s = 3000000", "would loosen the device's default (2.592e+06 s)"),
    ("max_revocation_validity_s = 172800", "would loosen the device's default (86400 s)"),
    ("proof_max_age_s = 600", "would loosen the device's default (120 s)"),
    ("clock_skew_s = 31", "would loosen the device's default (30 s)"),
    ("max_grant_lifetime_s = 10", "must be at least 60 s"),
    ("proof_max_age_s = 1", "must be at least 10 s"),
    ("clock_skew_s = -1", "must be at least 0 s"),
    ("max_grant_lifetime_s = nan", "must be a finite number"),
    ("max_revocation_validity_s = -inf", "must be a finite number"),
    ("proof_max_age_s = inf", "must be a finite number"),
    ('proof_max_age_s = "60"', "must be a finite number"),
    ("clock_skew_s = true", "must be a finite number"),
    ("automation_kinds = [\"grant\"]", "unknown keys in [authority]: automation_kinds"),
])
def test_loosening_or_garbled_values_are_refused(table: str, message: str) -> None:
    """Each value that would loosen a default, or is not a value of the right kind, is a clear PolicyError."""
    with pytest.raises(PolicyError) as raised:
        LocalPolicy.parse(f"[authority]\n{table}\n")
    assert message in str(raised.value)


def test_authority_must_be_a_table() -> None:
    with pytest.raises(PolicyError, match="authority must be a table"):
        LocalPolicy.parse('authority = "strict"')


def _store(tmp_path: Path, world: World, policy: AuthorityPolicy) -> AuthorityStore:
    tmp_path.mkdir(exist_ok=True)
    audit = DeviceAudit(tmp_path / "device-audit.jsonl", clock=lambda: NOW)
    return AuthorityStore(tmp_path / "authority", pin=world.root.fingerprint, device_id=DEVICE, group=lambda: GROUP,
                          audit=audit, policy=policy)


@pytest.mark.parametrize(("policy", "reason"), [
    (AuthorityPolicy(min_approvals=2), "needs 2 distinct approvers, has 1"),
    (AuthorityPolicy(four_eyes_kinds=DOCUMENT_KINDS), "needs 2 distinct approvers, has 1"),
    (AuthorityPolicy(max_grant_lifetime_s=DAY), "this device honours grants of at most 1 days"),
    (AuthorityPolicy(max_revocation_validity_s=3600), "revocation list is valid for longer than this device allows"),
], ids=["min_approvals", "four_eyes_for all", "max_grant_lifetime_s", "max_revocation_validity_s"])
def test_a_tightened_policy_refuses_what_the_defaults_allow(tmp_path: Path, policy: AuthorityPolicy,
                                                            reason: str) -> None:
    """A device grant one approver signed for a week, under a two-hour revocation list: the defaults honour it,
    each tightened rule refuses it with its reason."""
    world = make_world()
    grant = signed(world, "grant", grant_body(world), "alice")
    assert _store(tmp_path / "defaults", world, AuthorityPolicy()).apply(update(world, grant), NOW).accepted
    status = _store(tmp_path / "tight", world, policy).apply(update(world, grant), NOW)
    assert status.accepted == [] and reason in (status.refused[0].reason if status.refused else status.problem)


def test_a_shorter_proof_age_refuses_an_older_proof(tmp_path: Path) -> None:
    """A technician's proof signed 60 s ago passes the default 120 s and not a policy of 30 s."""
    world = make_world()
    grant = signed(world, "grant", grant_body(world), "alice")
    nonce = "n" * 32
    statement = TechnicianStatement(nonce=nonce, device_id=DEVICE, action="view", document_id="grant-0001",
                                    signed_at=NOW - 60)
    proof = ceremony.sign_technician_statement(world.keys["dave"], world.ids["dave"], statement)
    for policy, allowed in ((AuthorityPolicy(), True), (AuthorityPolicy(proof_max_age_s=30), False)):
        store = _store(tmp_path / str(allowed), world, policy)
        store.apply(update(world, grant), NOW)
        checked = store.check_grant("grant-0001", action="view", now=NOW, local=LOCAL).grant
        assert checked is not None
        verdict = store.verify_proof(proof, checked, nonce=nonce, action="view", now=NOW)
        assert verdict.allowed is allowed, verdict.reason
        assert allowed or "technician proof is stale" in verdict.reason


def test_build_reads_the_policy_file_and_refuses_an_unusable_one(tmp_path: Path) -> None:
    """The store an agent builds carries the file's [authority] rules; an unusable file is a PolicyError naming
    the file (not a silent fall-back to the defaults)."""
    state = AgentState(tmp_path / "state")
    state.directory.mkdir(mode=0o700)
    state.save_info({"device_id": DEVICE, "group": GROUP})
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text("[authority]\nmin_approvals = 2\n")
    config = AgentConfig(state_dir=state.directory, policy_file=policy_file)
    assert build(state, config).base_policy.min_approvals == 2
    assert build(state, AgentConfig(state_dir=state.directory)).base_policy == AuthorityPolicy()
    policy_file.write_text("[authority]\nmax_grant_lifetime_s = 9e9\n")
    with pytest.raises(PolicyError, match=f"local policy file {policy_file} is unusable: .*would loosen"):
        build(state, config)


async def test_the_agent_does_not_start_on_an_unusable_policy_file(tmp_path: Path) -> None:
    """A real ``helpline agent run`` with a policy that would loosen a default exits at once (status 2) and says
    which file and which key; the session-side reading of the same file denies every session (fail closed)."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        policy_file = tmp_path / "policy.toml"
        policy_file.write_text("[authority]\nrequire_user_verification = false\n")
        config = tmp_path / "agent.toml"
        config.write_text(f'[agent]\npolicy_file = "{policy_file}"\nbackoff_cap_s = 1.0\n')
        result = await asyncio.to_thread(helpline, "agent", "run", "--state", str(state.directory), "--config",
                                         str(config), check=False, timeout=60)
        assert result.returncode == 2, result.stderr
        assert f"local policy file {policy_file} is unusable" in result.stderr
        assert "require_user_verification can only be true" in result.stderr
        assert server.connections.get(state.device_id) is None
    assert LocalPolicy.load(policy_file).broken
