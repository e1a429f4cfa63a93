"""Every Right, granted and refused, at the real API routes (API tokens of real accounts)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec

from agent.consent.scripted import ScriptedConsentUI
from server.accounts import admin
from server.auth.rights import ALL_RIGHTS, ANY_GROUP, Right
from tests.authority_helpers import make_org
from tests.harness import enroll_agent, running_agent, running_server
from tests.test_accounts_support import client, make_user
from tests.test_session_helpers import configure_agent


async def _token(server, name: str, group: str, rights: Right) -> str:  # type: ignore[no-untyped-def]
    await make_user(server, name, "technician")
    if group not in (ANY_GROUP,):
        await admin.create_group(server.db, group, actor="test")
    await admin.assign_rights(server.db, name, group, rights, actor="test")
    return (await admin.create_token(server.db, name, "rights test", 3600, actor="test")).token


async def _call(server, token: str, method: str, path: str, body: Any = None) -> int:  # type: ignore[no-untyped-def]
    async with client(server, Authorization=f"Bearer {token}") as http:
        async with http.request(method, path, json=body) as resp:
            return resp.status


async def test_every_right_is_both_granted_and_refused(tmp_path: Path) -> None:
    """For each right, an account holding it (on the device's group) gets the route's success status; one holding
    all the other rights gets 403."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        dev = state.device_id
        root = await _token(server, "root", ANY_GROUP, ALL_RIGHTS)
        org = make_org()  # the server stores and relays documents; it verifies none of these approvals
        pending = msgspec.to_builtins(org.grant("grant-rights-1", signers=()))
        draft = msgspec.to_builtins(org.grant("grant-rights-2", signers=()))
        approval = msgspec.to_builtins(org.grant("grant-rights-1", signers=("alice",)).approvals[0])
        async with client(server, Authorization=f"Bearer {root}") as http:
            async with http.post("/api/v1/documents", json=pending) as resp:
                assert resp.status == 201, await resp.text()
        view_control = Right.REMOTE_VIEW | Right.REMOTE_CONTROL
        # (right, rights held, group, method, path, body, success status)
        cases: list[tuple[Right, Right, str, str, str, Any, int]] = [
            (Right.VIEW_INVENTORY, Right.VIEW_INVENTORY, "lab", "GET", f"/api/v1/devices/{dev}", None, 200),
            (Right.REMOTE_VIEW, Right.REMOTE_VIEW, "lab", "POST", f"/api/v1/devices/{dev}/sessions",
             {"mode": "view", "reason": "t"}, 201),
            (Right.REMOTE_CONTROL, view_control, "lab", "POST", f"/api/v1/devices/{dev}/sessions",
             {"mode": "control", "reason": "t"}, 201),
            (Right.RUN_TASKS, Right.RUN_TASKS, "lab", "GET", f"/api/v1/devices/{dev}/tasks", None, 200),
            (Right.MANAGE_GRANTS, Right.MANAGE_GRANTS, "lab", "POST", "/api/v1/documents", draft, 201),
            (Right.APPROVE_GRANTS, Right.APPROVE_GRANTS, "lab", "POST", "/api/v1/documents/grant-rights-1/approvals",
             approval, 200),
            (Right.ADMINISTER, Right.ADMINISTER, ANY_GROUP, "GET", "/api/v1/users", None, 200),
        ]
        # Session offers need the device connected; nobody answers the (scripted) consent prompt.
        async with running_agent(state, setup=configure_agent(None, ScriptedConsentUI([]))) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            # Another technician's (root's) recorded session: only view_recordings reaches its recording.
            sid = await _recorded_session(server, root, dev, tmp_path / "rec")
            cases.append((Right.VIEW_RECORDINGS, Right.VIEW_RECORDINGS, "lab", "GET",
                          f"/api/v1/sessions/{sid}/recording", None, 200))
            assert {case[0] for case in cases} == set(Right), "every right needs a case"
            results = {}
            for right, needed, group, method, path, body, success in cases:
                name = (right.name or "x").lower()
                granted = await _token(server, f"has_{name}", group, needed)
                refused = await _token(server, f"lacks_{name}", group, ALL_RIGHTS & ~right)
                # The refused call goes first: it must change nothing (the approval is still pending after it).
                without = await _call(server, refused, method, path, body)
                results[name] = (await _call(server, granted, method, path, body), without, success)
        for name, (with_right, without, success) in results.items():
            assert with_right == success, (name, with_right)
            assert without == 403, (name, without)


async def _recorded_session(server, token: str, device_id: str, directory: Path) -> str:  # type: ignore[no-untyped-def]
    """A session requested with ``token`` whose recording file exists (as the relay would have left it)."""
    async with client(server, Authorization=f"Bearer {token}") as http:
        async with http.post(f"/api/v1/devices/{device_id}/sessions", json={"mode": "view", "reason": "t"}) as resp:
            assert resp.status == 201, await resp.text()
            sid = str((await resp.json())["session_id"])
    directory.mkdir()
    (directory / f"{sid}.hlrec").write_bytes(b"")
    await server.db.execute("UPDATE sessions SET recording_path = ? WHERE id = ?", (str(directory / f"{sid}.hlrec"), sid))
    return sid


async def test_rights_on_another_group_do_not_reach_this_device(tmp_path: Path) -> None:
    """Full technician rights on group 'other' give nothing on a device in 'lab': refused (403, or 404 where the
    route hides that the device exists), and an error without device data in the reply."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        token = await _token(server, "bob", "other", ALL_RIGHTS)
        async with client(server, Authorization=f"Bearer {token}") as http:
            for method, path, body in (("GET", f"/api/v1/devices/{state.device_id}", None),
                                       ("GET", f"/api/v1/devices/{state.device_id}/inventory", None),
                                       ("POST", f"/api/v1/devices/{state.device_id}/sessions", {"mode": "view"}),
                                       ("GET", f"/api/v1/devices/{state.device_id}/tasks", None),
                                       ("GET", "/api/v1/users", None)):
                async with http.request(method, path, json=body) as resp:
                    assert resp.status in (403, 404), (path, resp.status)
                    reply = await resp.json()
                    assert set(reply) == {"error"}, (path, reply)  # an error, no device data
            async with http.get("/api/v1/devices") as resp:
                assert resp.status == 200 and (await resp.json())["total"] == 0
