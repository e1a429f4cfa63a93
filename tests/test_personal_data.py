"""Personal data (issue 17): the per-group switch reaches the agent, which leaves local accounts and login
history out; the server refuses them from an agent that sends them anyway; retention trims login history."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.inventory import InventoryPolicy, collect_inventory, policy_collectors, section_checksums
from agent.state import AgentState
from protocol.messages import InventoryAck, InventoryReport, Message
from server.cmdb import inventory_store, personal, settings
from server.cmdb.sections import split_report
from tests.harness import enroll_agent, running_agent, running_server, wait_until


def _config(state: AgentState) -> AgentConfig:
    return AgentConfig(state_dir=state.directory, backoff_cap_s=0.5, health_interval_s=3600.0,
                       inventory_interval_s=3600.0)


def _spy(sent: list[Message]) -> Any:
    def setup(agent: Any) -> None:
        original = agent.client.send

        async def spy(message: Message) -> None:
            sent.append(message)
            await original(message)

        agent.client.send = spy

    return setup


async def test_group_switch_reaches_the_agent_which_omits_the_sections(tmp_path: Path) -> None:
    """Switched off: the agent's report has no accounts/logins and the server holds none; on again: both back,
    login history windowed to the server's retention."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        await settings.set_group_personal_data(server.db, "default", False)
        await settings.set_login_retention(server.db, 7)
        sent: list[Message] = []
        async with running_agent(state, _config(state), setup=_spy(sent)) as agent:
            await wait_until(lambda: any(isinstance(m, InventoryReport) for m in sent), timeout=120,
                             what="inventory report")
            welcome = agent.client.welcome
            assert welcome is not None and welcome.inventory_policy.omit == ["accounts", "logins"]  # type: ignore[union-attr]
            report = next(m for m in sent if isinstance(m, InventoryReport))
            assert report.full and "storage" in report.sections
            assert not {"accounts", "logins"} & (set(report.sections) | set(report.checksums))
            async def stored_any() -> bool:
                return bool(await inventory_store.stored_checksums(server.db, state.device_id))

            await wait_until(stored_any, timeout=60, what="inventory stored")
            stored = await inventory_store.get_inventory(server.db, state.device_id)
            assert "accounts" not in stored and "logins" not in stored and "cpu" in stored

        await settings.set_group_personal_data(server.db, "default", True)
        sent.clear()
        async with running_agent(state, _config(state), setup=_spy(sent)):
            async def has_accounts() -> bool:
                return "accounts" in await inventory_store.get_inventory(server.db, state.device_id)

            await wait_until(has_accounts, timeout=120, what="accounts stored after the switch is on")
            stored = await inventory_store.get_inventory(server.db, state.device_id)
            passwd_names = [line.split(":", 1)[0] for line in Path("/etc/passwd").read_text().splitlines() if line]
            assert [u["name"] for u in stored["accounts"]["users"]] == passwd_names
            assert stored["logins"]["retention_days"] == 7


async def test_server_refuses_personal_sections_from_a_group_that_collects_none(tmp_path: Path) -> None:
    """An agent that ignores the policy (here: a fixed inventory with accounts) gets them refused as not_collected."""
    inventory = collect_inventory(policy_collectors(InventoryPolicy(), {
        "accounts": lambda: {"users": [{"name": "alice", "uid": 1000}], "groups": [], "unavailable": {}},
        "cpu": lambda: {"model": "x", "unavailable": {}}}))
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        await settings.set_group_personal_data(server.db, "default", False)
        sent: list[Message] = []
        received: list[InventoryAck] = []

        def setup(agent: Any) -> None:
            _spy(sent)(agent)
            agent.reporter.collect = lambda: inventory
            original = agent.reporter.on_reply

            def on_reply(in_reply_to: str, message: Message) -> None:
                if isinstance(message, InventoryAck):
                    received.append(message)
                original(in_reply_to, message)

            agent.reporter.on_reply = on_reply

        async with running_agent(state, _config(state), setup=setup):
            await wait_until(lambda: bool(received), timeout=60, what="inventory ack")
        ack = received[0]
        assert [(r.section, r.code) for r in ack.rejected] == [("accounts", "not_collected")]  # type: ignore[union-attr]
        stored = await inventory_store.get_inventory(server.db, state.device_id)
        assert set(stored) == {"cpu"}


def test_split_report_refuses_excluded_sections_only() -> None:
    """Excluded sections are refused whatever they hold; the others are stored."""
    sections = {"logins": {"entries": []}, "dns": {"nameservers": ["192.0.2.1"]}}
    good, rejected = split_report(True, sections, section_checksums(sections), frozenset({"logins", "accounts"}))
    assert set(good) == {"dns"} and [(r.section, r.code) for r in rejected] == [("logins", "not_collected")]


async def test_purge_trims_login_history_and_deletes_sections_of_switched_off_groups(tmp_path: Path) -> None:
    """Entries older than the retention leave the stored section (checksum updated) and the change history;
    a group switched off loses both personal sections."""
    now = time.time()
    old, recent = personal.iso_utc(now - 40 * 86400), personal.iso_utc(now - 86400)
    logins = {"retention_days": 90, "entries": [{"user": "bob", "time": recent}, {"user": "ann", "time": old}],
              "last": [{"user": "bob", "time": recent}, {"user": "ann", "time": old}], "unavailable": {}}
    accounts = {"users": [{"name": "bob", "uid": 1000}], "groups": [], "unavailable": {}}
    async with running_server(tmp_path / "srv") as server:
        a = await enroll_agent(server, tmp_path / "a")
        b = await enroll_agent(server, tmp_path / "b", group="lab")
        for device in (a.device_id, b.device_id):
            sections = {"logins": logins, "accounts": accounts}
            async with server.db.transaction() as tx:
                await inventory_store.apply_report(tx, device, full=True, sections=sections,
                                                   checksums=section_checksums(sections), now=now - 50 * 86400)
        await settings.set_login_retention(server.db, 30)
        await settings.set_group_personal_data(server.db, "lab", False)
        result = await personal.purge(server.db, now)
        assert (result.sections_deleted, result.sections_trimmed) == (2, 1)
        kept = await inventory_store.get_inventory(server.db, a.device_id)
        assert [e["user"] for e in kept["logins"]["entries"]] == ["bob"] == [e["user"] for e in kept["logins"]["last"]]
        assert (await inventory_store.stored_checksums(server.db, a.device_id) or {})["logins"] == \
            section_checksums(kept)["logins"]
        assert await inventory_store.get_inventory(server.db, b.device_id) == {}
        history = await inventory_store.changes(server.db, a.device_id, section="logins")
        assert history == []  # the only logins change (section_added) was 50 days old
        assert json.dumps(kept["accounts"]) == json.dumps(accounts)
