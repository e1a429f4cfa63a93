"""Approver-set changes are applied on the device: from then on only the set's approvers count.

The store on its own first (fixed clock, tests/test_authority.py's World), then through a real server and a
real agent: the change is relayed like any document, the device applies it, keeps it across a restart, and
documents signed by approvers outside the set stop being honoured.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from protocol.authority import ApproverSetChange, UnattendedGrant
from server.authority import repository as documents
from tests.authority_helpers import make_org
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.tasks_helpers import pinned, publish_authority
from tests.test_agent_authority import LOCAL, events, make_store, update
from tests.test_authority import NOW, World, grant_body, make_world, signed


@pytest.fixture
def world() -> World:
    return make_world()


def change(world: World, sequence: int, approvers: tuple[str, ...], *signers: str, change_id: str = "") -> object:
    body = ApproverSetChange(change_id=change_id or f"set-{sequence}", sequence=sequence,
                             approvers=[world.ids[a] for a in approvers], issued_at=NOW - 60)
    return signed(world, "approver_set", body, *signers)


def test_an_applied_set_decides_who_counts_and_never_goes_back(tmp_path: Path, world: World) -> None:
    """A four-eyes change is applied (audited, reported, kept across a restart); a grant by an approver outside the
    set is refused from then on, one by its members honoured; older, equal, under-approved changes and changes
    signed by approvers the set no longer has are refused, each with its reason."""
    store = make_store(tmp_path, world.root.fingerprint)
    by_alice = signed(world, "grant", grant_body(world), "alice")
    by_bob = signed(world, "grant", grant_body(world, grant_id="grant-0002"), "bob")
    assert store.apply(update(world, by_alice, by_bob), NOW).accepted == ["grant-0001", "grant-0002"]

    status = store.apply(update(world, by_alice, by_bob, change(world, 1, ("bob", "carol"), "alice", "bob")), NOW)
    assert status.accepted == ["set-1", "grant-0002"], status
    assert "alice" not in str(status.accepted)
    reasons = {r.document_id: r.reason for r in status.refused}
    assert "Alice" in reasons["grant-0001"] and "not in the current approver set" in reasons["grant-0001"]
    assert store.approver_set == (1, frozenset({world.ids["bob"], world.ids["carol"]}))
    applied = [e for e in store.audit.entries() if e["event"] == "approver_set.applied"]
    assert len(applied) == 1 and applied[0]["sequence"] == 1 and applied[0]["approved_by"] == ["Alice", "Bob"]
    verdict = store.check_grant("grant-0001", action="view", now=NOW, local=LOCAL).verdict
    assert not verdict.allowed and "not in the current approver set" in verdict.reason

    # The same change delivered again changes nothing and is not audited again.
    again = store.apply(update(world, by_alice, by_bob, change(world, 1, ("bob", "carol"), "alice", "bob")), NOW)
    assert again.accepted == ["set-1", "grant-0002"]
    assert [e for e, _ in events(store)].count("approver_set.applied") == 1

    attempts = {
        "set-0": change(world, 1, ("alice",), "bob", "carol", change_id="set-0"),  # equal sequence
        "set-2": change(world, 2, ("alice",), "alice", "bob"),  # Alice no longer counts
        "set-3": change(world, 3, ("alice",), "bob"),  # one approver
    }
    status = store.apply(update(world, by_alice, by_bob, *attempts.values()), NOW)
    reasons = {r.document_id: r.reason for r in status.refused}
    assert "not newer than the applied set set-1 (sequence 1)" in reasons["set-0"]
    assert "approver sets never go back" in reasons["set-0"]
    assert "not in the current approver set" in reasons["set-2"]
    assert "needs 2 distinct approvers, has 1" in reasons["set-3"]
    refused = [e for e in store.audit.entries() if e["event"] == "approver_set.refused"]
    assert {e["document_id"] for e in refused} == set(attempts)
    assert store.approver_set[0] == 1

    # Kept across a restart of the agent.
    restarted = make_store(tmp_path, world.root.fingerprint)
    assert restarted.approver_set == (1, frozenset({world.ids["bob"], world.ids["carol"]}))
    assert not restarted.check_grant("grant-0001", action="view", now=NOW, local=LOCAL).verdict.allowed
    assert restarted.check_grant("grant-0002", action="view", now=NOW, local=LOCAL).grant is not None

    # A newer change by the set's members moves it on: Alice counts again.
    status = restarted.apply(update(world, by_alice, by_bob, change(world, 4, ("alice", "bob"), "bob", "carol")),
                             NOW)
    assert status.accepted == ["set-4", "grant-0001", "grant-0002"], status
    assert restarted.approver_set == (4, frozenset({world.ids["alice"], world.ids["bob"]}))
    older = restarted.apply(update(world, change(world, 3, ("carol",), "alice", "bob")), NOW)
    assert "(sequence 3) is not newer than the applied set set-4 (sequence 4)" in older.refused[0].reason
    assert restarted.approver_set == (4, frozenset({world.ids["alice"], world.ids["bob"]}))


def test_changes_in_one_update_apply_in_sequence_order(tmp_path: Path, world: World) -> None:
    """Two changes delivered newest first: the older is applied first, then the newer (approved by the older
    set's members), so the device ends on the newer set."""
    store = make_store(tmp_path, world.root.fingerprint)
    first = change(world, 1, ("bob", "carol"), "alice", "bob")
    second = change(world, 2, ("carol", "alice"), "bob", "carol")
    store.apply(update(world, second, first), NOW)
    assert store.approver_set == (2, frozenset({world.ids["carol"], world.ids["alice"]}))
    assert [e["sequence"] for e in store.audit.entries() if e["event"] == "approver_set.applied"] == [1, 2]


async def test_the_set_relayed_by_a_real_server_is_applied_by_a_real_agent(tmp_path: Path) -> None:
    """Through a real server and agent: after the approver set {Bob, Carol} reaches the device, a group grant
    Alice and Bob signed is refused there (and reported so), one Bob and Carol signed is honoured — also after the
    agent restarts."""
    org = make_org()
    org.certify("carol", "approver", "Carol")
    now = time.time()
    set_change = org.sign("approver_set", ApproverSetChange(
        change_id="set-1", sequence=1, approvers=[org.ids["bob"], org.ids["carol"]], issued_at=now))

    def grant(grant_id: str, signers: tuple[str, str]) -> object:
        return org.sign("grant", UnattendedGrant(grant_id=grant_id, groups=["lab"], technician_names=["Dave"],
                                                 actions=["view"], not_before=now - 60, not_after=now + 3600,
                                                 issuer="Alice", issued_at=now), signers)

    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        await publish_authority(server.db, org)
        for document in (grant("grant-ab", ("alice", "bob")), grant("grant-bc", ("bob", "carol")), set_change):
            await documents.create_document(server.db, document, actor="user:test")  # type: ignore[arg-type]
        for attempt in range(2):
            async with running_agent(state, pinned(state, org)) as agent:
                store = agent.parts.authority.store

                async def reported() -> bool:
                    row = await documents.device_status(server.db, state.device_id)
                    return row is not None and "grant-bc" in row["accepted"] and "grant-ab" in row["refused"]

                await wait_until(reported, timeout=20, what="the agent's report of the approver set")
                assert store.approver_set == (1, frozenset({org.ids["bob"], org.ids["carol"]})), attempt
                refused = store.check_grant("grant-ab", action="view", now=time.time(), local=LOCAL).verdict
                assert not refused.allowed and "not in the current approver set" in refused.reason
                assert store.check_grant("grant-bc", action="view", now=time.time(), local=LOCAL).grant is not None
        applied = [e for e in store.audit.entries() if e["event"] == "approver_set.applied"]
        assert len(applied) == 1  # the restart did not apply it again
