"""Processes and services through a real server and agent (issue 16): a process started by the test is listed and
ended from the API within the technician's consented control session, audited on both sides; every refusal — no
session, a view-only session, another technician's session, a viewer-role account, a technician of another
group, the device's own check when the server is bypassed — leaves the process running; services answer "not
available" where systemd is not PID 1."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from agent.consent.scripted import ScriptedConsentUI
from protocol.tools import ProcessEndRequest
from server.accounts import admin
from server.tools.feature import TOOL_CALLS
from tests.harness import console_url, enroll_agent, running_agent, running_server, wait_until
from tests.test_accounts_support import make_user, ssl_context
from tests.test_session_access import Setup, technician_with_device
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

MARKER = "helpline-tools-e2e-marker"


@contextlib.contextmanager
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process the test owns, named by a marker in its command line; killed by PID at the end."""
    proc = subprocess.Popen([sys.executable, "-c", f"import time  # {MARKER}\nprint('ready', flush=True)\n"
                             "time.sleep(600)"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def call(server: Any, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(
            method, console_url(server) + path, json=body, ssl=ssl_context(server),
            headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json(content_type=None)


async def end(setup: Setup, pid: int, body: dict[str, Any], token: str | None = None) -> tuple[int, Any]:
    return await call(setup.server, token or setup.token, "POST",
                      f"/api/v1/devices/{setup.device_id}/processes/{pid}/end", body)


async def test_process_listed_and_ended_only_within_own_control_session(tmp_path: Path,
                                                                        xvfb: XvfbHandle) -> None:  # noqa: F811
    """Listed with its command line; ending it is refused without a session, with a view session, with another
    technician's session and by the device itself when the server is bypassed; ended by SIGTERM in the caller's
    control session; audited by the server and the device."""
    async with technician_with_device(tmp_path, xvfb.display, ScriptedConsentUI([True, True])) as setup:
        server = setup.server
        await make_user(server, "tom", "technician", groups={"lab": None})
        tom = (await admin.create_token(server.db, "tom", "tools", None, actor="test")).token
        with sleeper() as proc:
            status, body = await call(server, setup.token, "GET", f"/api/v1/devices/{setup.device_id}/processes")
            assert status == 200, body
            listed = [p for p in body["processes"] if p["pid"] == proc.pid]
            assert listed and MARKER in listed[0]["cmdline"] and listed[0]["memory_rss"] > 0
            started_at = listed[0]["started_at"]

            status, body = await end(setup, proc.pid, {"session_id": "no-such-session"})
            assert (status, body["error"]["code"]) == (403, "no_authority"), body

            view = await setup.request("view")
            async with setup.viewer(view) as viewer:
                await viewer.wait_for_updates(1, 30)
                status, body = await end(setup, proc.pid, {"session_id": view})
                assert status == 403 and "view only" in body["error"]["message"], body
                # The server bypassed (as a compromised server could): the device checks its own session record.
                calls = server.console_app[TOOL_CALLS]
                answer = await calls.ask(setup.device_id, ProcessEndRequest(
                    technician="tess", technician_user="tess", session_id=view, pid=proc.pid), 30)
                assert answer.error == "no_authority" and "view only" in answer.message
            await wait_until(lambda: view not in setup.agent.sessions.running, timeout=15, what="view session over")

            control = await setup.request("control")
            async with setup.viewer(control) as viewer:
                await viewer.wait_for_updates(1, 30)
                status, body = await end(setup, proc.pid, {"session_id": control}, token=tom)
                assert status == 403 and "another technician" in body["error"]["message"], body
                answer = await server.console_app[TOOL_CALLS].ask(setup.device_id, ProcessEndRequest(
                    technician="tom", technician_user="tom", session_id=control, pid=proc.pid), 30)
                assert answer.error == "no_authority" and "another technician" in answer.message
                assert proc.poll() is None, "a refused request ended the process"

                status, body = await end(setup, proc.pid, {"session_id": control, "started_at": started_at,
                                                           "grace_s": 5})
                assert (status, body) == (200, {"outcome": "ended by SIGTERM"})
                proc.wait(10)  # the in-process agent reaped its sibling already: it is gone either way
                assert not psutil.pid_exists(proc.pid)

        rows = await server.db.fetchall("SELECT actor, details FROM audit_log WHERE action = ? ORDER BY seq",
                                        ("device.process.end",))
        assert [r["actor"] for r in rows] == ["user:tess", "user:tess", "user:tom", "user:tess"]
        assert '"done":true' in rows[-1]["details"].replace(" ", "") and "SIGTERM" in rows[-1]["details"]
        device = setup.agent.sessions.authority
        assert device is not None
        entries = [e for e in device.audit.entries() if e["event"] == "tools.process.end"]
        assert [(e["done"], e["technician_user"]) for e in entries] == [(False, "tess"), (False, "tom"),
                                                                        (True, "tess")]
        assert entries[-1]["pid"] == proc.pid and entries[-1]["outcome"] == "ended by SIGTERM"


async def test_refusals_by_role_and_group_and_services_not_available(tmp_path: Path) -> None:
    """A viewer-role account may not list (403), a technician of another group does not see the device (404);
    the technician gets services' 409 "not available: systemd is not running (PID 1 is …)", journal alike."""
    async with running_server(tmp_path / "srv") as server:
        await make_user(server, "tess", "technician", groups={"lab": None})
        await make_user(server, "vic", "viewer", groups={"lab": None})
        await make_user(server, "otto", "technician", groups={"other": None})
        tokens = {name: (await admin.create_token(server.db, name, "t", None, actor="test")).token
                  for name in ("tess", "vic", "otto")}
        state = await enroll_agent(server, tmp_path / "a", group="lab")
        async with running_agent(state) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 30)
            await wait_until(lambda: server.connections.get(state.device_id) is not None, timeout=30,
                             what="agent connected")
            base = f"/api/v1/devices/{state.device_id}"
            with sleeper() as proc:
                status, body = await call(server, tokens["vic"], "GET", base + "/processes")
                assert status == 403, body
                status, body = await call(server, tokens["otto"], "GET", base + "/processes")
                assert status == 404, body
                status, body = await call(server, tokens["otto"], "POST", base + f"/processes/{proc.pid}/end",
                                          {"session_id": "x"})
                assert status == 404, body
                status, body = await call(server, tokens["vic"], "POST", base + f"/processes/{proc.pid}/end",
                                          {"session_id": "x"})
                assert status == 403, body
                assert proc.poll() is None
            init = psutil.Process(1).name()
            status, body = await call(server, tokens["tess"], "GET", base + "/services")
            assert status == 409, body
            assert body["error"] == {"code": "unavailable",
                                     "message": f"not available: systemd is not running (PID 1 is {init})"}
            status, body = await call(server, tokens["tess"], "GET", base + "/services/cron.service/journal?lines=5")
            assert status == 409 and body["error"]["code"] == "unavailable", body
            status, body = await call(server, tokens["tess"], "POST", base + "/services/-H/actions",
                                      {"action": "stop", "session_id": "x"})
            assert status == 400, body
            status, body = await call(server, tokens["tess"], "GET", base + "/services/cron.service/journal?lines=9999")
            assert status == 400, body
