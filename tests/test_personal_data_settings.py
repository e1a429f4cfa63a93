"""Personal-data settings reachable (issue 17): the per-group switch and the login-history retention through
the API (rights, audit, validation) and the CLI; a change reaches a connected agent at once — it stops (or
starts again) collecting local accounts and login history without reconnecting, and the server deletes
what it held."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.config import AgentConfig
from agent.state import AgentState
from certs import tls
from server.api.context import AUTHENTICATORS
from server.app import HelplineServer
from server.auth.rights import ALL_RIGHTS, Principal, Right
from server.cmdb import inventory_store, personal_push, settings
from tests.harness import console_url, enroll_agent, running_agent, running_server, wait_until

PRINCIPALS = {
    "admin": Principal("u1", "admin", "admin", {"*": ALL_RIGHTS}),
    "default-admin": Principal("u2", "gadmin", "technician", {"default": Right.ADMINISTER | Right.VIEW_INVENTORY}),
    "lab-viewer": Principal("u3", "viewer", "viewer", {"lab": Right.VIEW_INVENTORY}),
}


async def _auth(request: Any) -> Principal | None:
    return PRINCIPALS.get(request.headers.get("X-Test-User", ""))


async def _call(server: HelplineServer, method: str, path: str, user: str = "admin", body: Any = None
                ) -> tuple[int, Any]:
    ssl = tls.agent_client_context(server.pki.ca_pem, None, None)
    async with aiohttp.ClientSession() as http, http.request(method, console_url(server) + path, ssl=ssl, json=body,
                                                             headers={"X-Test-User": user}) as resp:
        return resp.status, await resp.json()


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[HelplineServer]:
    async with running_server(tmp_path / "srv") as server:
        server.console_app[AUTHENTICATORS].append(_auth)
        yield server


def _config(state: AgentState) -> AgentConfig:
    return AgentConfig(state_dir=state.directory, backoff_cap_s=0.5, health_interval_s=3600.0,
                       inventory_interval_s=3600.0)


async def _held(server: HelplineServer, device_id: str) -> set[str]:
    return set(await inventory_store.get_inventory(server.db, device_id)) & {"accounts", "logins"}


async def _audit(server: HelplineServer, action: str) -> list[tuple[str, str]]:
    rows = await server.db.fetchall("SELECT actor, target FROM audit_log WHERE action = ? ORDER BY seq", (action,))
    return [(r["actor"], r["target"]) for r in rows]


async def test_api_switch_reaches_the_connected_agent_and_is_audited(srv: HelplineServer, tmp_path: Path) -> None:
    """Off through the API: the connected agent sends a full report without the sections (no reconnect), the
    server holds none; on again: they come back. Group admins may switch their group, others get 404; the
    retention needs administer on every group and is validated."""
    state = await enroll_agent(srv, tmp_path / "agent")
    await srv.db.execute("INSERT INTO device_groups (name, created_at) VALUES ('lab', 0)")
    async with running_agent(state, _config(state)) as agent:
        await wait_until(lambda: _has(srv, state.device_id, {"accounts", "logins"}), timeout=120,
                         what="accounts and logins stored")
        status, shown = await _call(srv, "GET", "/api/v1/cmdb/personal-data", "lab-viewer")
        assert status == 200 and shown["groups"] == [{"name": "lab", "collect": True}], shown
        assert shown["login_retention_days"] == 90

        assert (await _call(srv, "PUT", "/api/v1/groups/default/personal-data", "lab-viewer",
                            {"collect": False}))[0] == 404
        assert (await _call(srv, "PUT", "/api/v1/groups/nowhere/personal-data", "admin", {"collect": False}))[0] == 404
        status, answer = await _call(srv, "PUT", "/api/v1/groups/default/personal-data", "default-admin",
                                     {"collect": False})
        assert status == 200 and answer == {"group": "default", "collect": False}, answer
        assert await _held(srv, state.device_id) == set()  # deleted at once, not at the next maintenance pass

        async def agent_omits() -> bool:
            return agent.reporter._pushed_policy is not None and "accounts" in agent.reporter._pushed_policy.omit

        await wait_until(agent_omits, timeout=60, what="the agent follows the pushed policy")
        await wait_until(lambda: _acked_without(agent, {"accounts", "logins"}), timeout=60,
                         what="a full report without accounts/logins acknowledged")
        assert await _held(srv, state.device_id) == set()
        assert agent.client.connections == 1  # reached over the open connection
        assert await _audit(srv, "cmdb.personal_data.group") == [("gadmin", "default")]

        status, shown = await _call(srv, "GET", "/api/v1/cmdb/personal-data")
        assert {g["name"]: g["collect"] for g in shown["groups"]} == {"default": False, "lab": True}

        assert (await _call(srv, "PUT", "/api/v1/cmdb/personal-data/retention", "default-admin",
                            {"login_retention_days": 7}))[0] in (403, 404)
        assert (await _call(srv, "PUT", "/api/v1/cmdb/personal-data/retention", "admin",
                            {"login_retention_days": 0}))[0] == 400
        status, answer = await _call(srv, "PUT", "/api/v1/cmdb/personal-data/retention", "admin",
                                     {"login_retention_days": 7})
        assert status == 200 and answer == {"login_retention_days": 7}
        assert await _audit(srv, "cmdb.personal_data.retention") == [("admin", "*")]

        status, _ = await _call(srv, "PUT", "/api/v1/groups/default/personal-data", "admin", {"collect": True})
        assert status == 200
        await wait_until(lambda: _has(srv, state.device_id, {"accounts", "logins"}), timeout=60,
                         what="accounts and logins back after switching on")
        stored = await inventory_store.get_inventory(srv.db, state.device_id)
        assert stored["logins"]["retention_days"] == 7  # the pushed policy carries the new retention
        assert agent.client.connections == 1


async def _has(server: HelplineServer, device_id: str, sections: set[str]) -> bool:
    return await _held(server, device_id) == sections


def _acked_without(agent: Any, sections: set[str]) -> bool:
    acked = agent.reporter.load_acked()
    return acked is not None and not sections & set(acked.checksums)


async def test_cli_show_and_set_reach_the_running_server_and_agent(srv: HelplineServer, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``helpline admin personal-data set`` in another thread (its own database connection, as another
    process would): the running server picks the change up through the events table and the connected agent
    stops sending the sections; ``show`` prints the settings; bad input is refused."""
    from helpline.cli import main

    state = await enroll_agent(srv, tmp_path / "agent")
    args = ["--data", str(srv.config.data_dir)]
    async with running_agent(state, _config(state)) as agent:
        await wait_until(lambda: _has(srv, state.device_id, {"accounts", "logins"}), timeout=120,
                         what="accounts and logins stored")
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["admin", "personal-data", "set", "--group", "default", "--collect", "off",
                                              "--login-retention-days", "30", *args])
        assert code == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["login_retention_days"] == 30
        assert printed["groups"] == [{"name": "default", "collect": False}]
        assert await _held(srv, state.device_id) == set()
        await wait_until(lambda: _acked_without(agent, {"accounts", "logins"}), timeout=60,
                         what="the agent's report without accounts/logins acknowledged")
        assert agent.client.connections == 1
        assert await asyncio.to_thread(main, ["admin", "personal-data", "show", *args]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["groups"] == [{"name": "default", "collect": False}] and shown["login_retention_days"] == 30
        assert await asyncio.to_thread(main, ["admin", "personal-data", "set", "--group", "nowhere", "--collect",
                                              "on", *args]) == 1
        assert await asyncio.to_thread(main, ["admin", "personal-data", "set", "--login-retention-days", "0",
                                              *args]) == 1
        assert await asyncio.to_thread(main, ["admin", "personal-data", "set", "--group", "default", *args]) == 2
        assert await _audit(srv, "cmdb.personal_data.group") == [("cli", "default")]


async def test_push_goes_in_batches_to_the_named_group_or_all(srv: HelplineServer, tmp_path: Path) -> None:
    """Batches of one: both agents of ``default`` get the policy, the ``lab`` one not; ``*`` reaches all three."""
    states = [await enroll_agent(srv, tmp_path / "a"), await enroll_agent(srv, tmp_path / "b"),
              await enroll_agent(srv, tmp_path / "c", group="lab")]
    async with AsyncExitStack() as stack:
        agents = [await stack.enter_async_context(running_agent(s, _config(s))) for s in states]
        await wait_until(lambda: len(srv.connections) == 3 and all(a.client.welcome for a in agents), timeout=120,
                         what="three agents connected")
        await settings.set_group_personal_data(srv.db, "default", False)
        assert await personal_push.push(srv, "default", batch=1, pause_s=0.01) == 2
        await wait_until(lambda: all(a.reporter._pushed_policy is not None for a in agents[:2]), timeout=60,
                         what="both default agents got the policy")
        assert agents[2].reporter._pushed_policy is None
        first = agents[0].reporter._pushed_policy
        assert first is not None and first.omit == frozenset({"accounts", "logins"})
        assert await personal_push.push(srv, "*", batch=2, pause_s=0.01) == 3
        await wait_until(lambda: agents[2].reporter._pushed_policy is not None, timeout=60, what="lab agent pushed")
        third = agents[2].reporter._pushed_policy
        assert third is not None and third.omit == frozenset()
