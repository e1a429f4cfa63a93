"""authority.update never exceeds the control channel's frame limit: large ones travel in parts.

The pure split and join first (every part within the budget, the parts joining back to the same update,
bad sequences of parts refused), then a real server relaying more documents than fit in 4 MiB to a real
agent, which must end up holding every one of them.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import msgspec
import pytest

from protocol import codec, limits
from protocol.authority import TaskAuthorization
from protocol.authority_messages import AuthorityUpdate
from protocol.authority_parts import TooLarge, encoded_size, join_parts, split_update
from protocol.errors import InvalidMessage
from server.authority import push
from server.authority import repository as documents
from tests.authority_helpers import Org, make_org
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.tasks_helpers import pinned, publish_authority

#: A parameter of this many characters makes each document about 20 KiB.
BLOB = 20_000


def task_document(org: Org, number: int, *, blob: int = BLOB, groups: tuple[str, ...] = ("lab",)) -> object:
    now = time.time()
    body = TaskAuthorization(task_id=f"task-{number:04d}", action="clear_temp",
                             params={"targets": ["tmp"], "dry_run": True, "note": secrets.token_hex(blob // 2)},
                             groups=list(groups), not_before=now - 60, not_after=now + 3600, issuer="Alice",
                             issued_at=now)
    return org.sign("task", body)


def big_update(org: Org, count: int) -> AuthorityUpdate:
    return AuthorityUpdate(root=org.root, certs=org.certs, revocations=org.revocations(),
                           documents=[task_document(org, n) for n in range(count)],  # type: ignore[misc]
                           withdrawn=["gone-1", "gone-2"])


def test_a_small_update_stays_one_message() -> None:
    """Below the budget nothing changes: one message, part 1 of 1."""
    org = make_org()
    update = big_update(org, 3)
    assert split_update(update) == [update] and update.part == update.parts == 1


def test_a_large_update_splits_into_parts_that_join_back() -> None:
    """Each part encodes within the budget (and so decodes on the agent under the frame limit); only the first
    carries the root and revocations; joined, the parts are the original update."""
    org = make_org()
    update = big_update(org, 60)
    budget = 256 * 1024
    parts = split_update(update, budget)
    assert len(parts) > 4
    assert all(encoded_size(p) <= budget for p in parts)
    assert [(p.part, p.parts) for p in parts] == [(n, len(parts)) for n in range(1, len(parts) + 1)]
    assert parts[0].root == org.root and all(p.root is None and p.revocations is None for p in parts[1:])
    for part in parts:  # what the agent's codec makes of each frame
        decoded = codec.decode(codec.encode(part))
        assert isinstance(decoded, AuthorityUpdate) and decoded.part == part.part
    joined = join_parts(parts)
    assert isinstance(joined, AuthorityUpdate)
    for field in ("root", "rotations", "certs", "revocations", "documents", "withdrawn", "complete", "handover"):
        assert getattr(joined, field) == getattr(update, field), field
    assert joined.part == joined.parts == 1
    # The real frame limit: the whole update here is about 1.2 MiB; scaled up it would not fit.
    assert encoded_size(update) > budget


def test_bad_sequences_of_parts_are_refused() -> None:
    """Missing, reordered, mixed or overfull parts do not join into an update."""
    org = make_org()
    parts = split_update(big_update(org, 30), 128 * 1024)
    assert len(parts) >= 3
    assert "not 1.." in str(join_parts(parts[:-1]))
    assert "not 1.." in str(join_parts([parts[1], parts[0], *parts[2:]]))
    smuggled = msgspec.structs.replace(parts[1], root=org.root)
    assert "only the first part" in str(join_parts([parts[0], smuggled, *parts[2:]]))
    assert join_parts([]) == "no parts"
    with pytest.raises(InvalidMessage, match="<= 32"):
        codec.decode(codec.encode(parts[0]).replace(f'"parts":{len(parts)}', '"parts":99'))


def test_an_entry_larger_than_a_part_is_refused_by_the_split() -> None:
    """The split never builds a frame that would close the channel: an item over the budget is an error."""
    org = make_org()
    update = AuthorityUpdate(root=org.root, documents=[task_document(org, 1, blob=40_000)])  # type: ignore[list-item]
    with pytest.raises(TooLarge, match="does not fit a part"):
        split_update(update, 16 * 1024)
    assert limits.MAX_AUTHORITY_UPDATE_BYTES < limits.MAX_CONTROL_MESSAGE_BYTES


def test_the_update_before_an_offer_carries_only_the_certificates_its_document_needs() -> None:
    """Approvers who signed, the technicians it names (by credential or holder) and the revocation list's signer —
    not every certificate of the org."""
    org = make_org()
    for number in range(20):
        org.certify(f"other{number}", "approver", f"Other {number}")
    org.certify("erin", "technician", "Erin")
    grant = org.grant("grant-1", technician_names=["Dave"])
    revocations = org.revocations()
    kept = push.needed_certs(org.certs, [grant], revocations)
    ids = {msgspec.json.decode(c.body)["credential_id"] for c in kept}
    assert ids == {org.ids["alice"], org.ids["bob"], org.ids["dave"], org.ids["desk"]}


async def test_the_agent_joins_the_parts_of_one_connection(tmp_path: Path) -> None:
    """Parts are applied once the last arrived (nothing before); a single update between two parts (the one before
    an offer) is applied and the parts go on; parts begun on an earlier connection are dropped, not mixed in."""
    from agent.authority.audit import DeviceAudit
    from agent.authority.feature import AuthorityFeature
    from agent.authority.store import AuthorityStore
    from agent.control_client import AgentClient
    from agent.state import AgentState

    org = make_org()
    state = AgentState(tmp_path / "state")
    state.directory.mkdir(mode=0o700)
    state.save_info({"device_id": "dev-1", "group": "lab"})
    client = AgentClient(state)
    client.connections = 1
    store = AuthorityStore(tmp_path / "authority", pin=org.root.fingerprint, device_id="dev-1", group=lambda: "lab",
                           audit=DeviceAudit(tmp_path / "audit.jsonl"))
    feature = AuthorityFeature(client, store)
    parts = split_update(big_update(org, 20), 96 * 1024)
    assert len(parts) >= 3
    await feature.on_update(client, parts[0])
    assert store.documents() == []
    extra = AuthorityUpdate(root=org.root, certs=org.certs, revocations=org.revocations(), complete=False,
                            documents=[task_document(org, 999, blob=100)])  # type: ignore[list-item]
    await feature.on_update(client, extra)
    assert [d.body for d in store.documents()] == [extra.documents[0].body]
    for part in parts[1:]:
        await feature.on_update(client, part)
    assert len(store.documents()) == 20  # the complete update replaced what was held
    assert store.first_update.applied_for(1)

    again = split_update(big_update(org, 10), 96 * 1024)
    await feature.on_update(client, again[0])
    client.connections = 2  # reconnected: the rest of the old series must not complete it
    for part in again[1:]:
        await feature.on_update(client, part)
    assert len(store.documents()) == 20 and not store.first_update.applied_for(2)


async def test_a_real_agent_receives_more_documents_than_one_frame_holds(tmp_path: Path) -> None:
    """230 signed task authorizations of ~20 KiB each (over 4 MiB in all) for the device's group: the server
    sends them in parts and the agent holds and reports every one (before, the one oversized frame closed the
    channel, and the agent reconnected to the same frame forever)."""
    org = make_org()
    count = 230
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        await publish_authority(server.db, org)
        for number in range(count):
            await documents.create_document(server.db, task_document(org, number), actor="user:test")  # type: ignore[arg-type]
        whole = await push.update_for(server.db, state.device_id, "lab")
        assert len(whole.documents) == count and encoded_size(whole) > limits.MAX_CONTROL_MESSAGE_BYTES
        async with running_agent(state, pinned(state, org)) as agent:
            store = agent.parts.authority.store
            await wait_until(lambda: len(store.documents()) == count, timeout=60,
                             what="the agent holds every document")
            assert store.unattended_problem(time.time()) == ""

            async def reported() -> bool:
                row = await documents.device_status(server.db, state.device_id)
                return row is not None and len(msgspec.json.decode(row["accepted"])) == count

            await wait_until(reported, timeout=30, what="the agent's report of every document")
            assert agent.client.connections == 1  # never dropped by an oversized frame
