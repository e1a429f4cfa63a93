"""A script self-service fix's bytes reach the device (issue 18): uploaded beside the signed fix, fetched over mTLS.

A real server holds an org's root and a SelfServiceFix of action ``script`` two approvers signed for one device;
the administrator uploads the script's bytes (refused before a fix names them, or when they do not hash to the
name, or from a technician). The real agent (its pin the org root) verifies the fix, fetches the script from its
own server with its client certificate, keeps it 0600 and offers the fix; the run executes exactly those bytes.
A copy altered on the device is fetched again; bytes the server serves that are not the signed ones are
refused and nothing is offered; another device may not fetch the script at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.config import AgentConfig
from agent.help import script_fetch
from agent.help.desk import Caller
from agent.update.download import Source
from certs import tls
from protocol.authority import RunBudget, SelfServiceFix
from server import audit
from server.app import HelplineServer
from server.fixscripts import store
from tests.authority_helpers import make_org, publish, submit
from tests.harness import console_url, enroll_agent, running_agent, running_server, wait_until
from tests.test_help_request import short_dir
from tests.test_session_helpers import install_test_auth

SCRIPT = b'#!/bin/sh\necho "script-ran with $# args"\n'
SHA = hashlib.sha256(SCRIPT).hexdigest()


def fix_body(device_id: str) -> SelfServiceFix:
    now = time.time()
    return SelfServiceFix(
        fix_id="fix-script", title="Repair the printer spooler", action="script", script_sha256=SHA,
        budget=RunBudget(max_runs=5, per_seconds=3600), devices=[device_id], not_before=now - 60,
        not_after=now + 3600, issuer="Alice", issued_at=now)


async def put_script(server: HelplineServer, sha256: str, data: bytes, user: str = "root") -> tuple[int, Any]:
    ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
    async with aiohttp.ClientSession() as http, http.put(
        f"{console_url(server)}/api/v1/fix-scripts/{sha256}", data=data, ssl=ctx,
        headers={"X-Test-User": user, "Content-Type": "application/octet-stream"}
    ) as response:
        return response.status, await response.json(content_type=None)


async def test_a_script_fix_runs_exactly_the_signed_bytes_fetched_over_mtls(tmp_path: Path) -> None:
    """Upload refused (no fix names it: 404; wrong bytes: 409; a technician: 403), then stored and audited; the
    agent fetches it (0600), offers and runs it; a tampered local copy is replaced by the signed bytes before the
    next run; a server serving other bytes gets them refused; another device's fetch is a 404."""
    org = make_org()
    with short_dir() as state_dir:
        async with running_server(tmp_path / "server") as server:
            install_test_auth(server)
            await publish(server, org)
            state = await enroll_agent(server, state_dir / "agent")
            other = await enroll_agent(server, state_dir / "other")
            assert (await put_script(server, SHA, SCRIPT))[0] == 404  # no fix names it yet
            await submit(server, org.sign("fix", fix_body(state.device_id)))
            status, answer = await put_script(server, SHA, SCRIPT + b"# more\n")
            assert status == 409 and answer["error"]["code"] == "script_mismatch", answer
            assert (await put_script(server, SHA, SCRIPT, user="ann"))[0] == 403
            status, answer = await put_script(server, SHA, SCRIPT)
            assert status == 201 and answer["fixes"] == ["fix-script"], answer
            assert (await put_script(server, SHA, SCRIPT))[0] == 200  # stored once
            uploads = await audit.recent(server.db, limit=20, action="fix_script.upload")
            assert [r["target"] for r in uploads] == [SHA]

            config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, trust_root_sha256=org.root.fingerprint)
            async with running_agent(state, config) as agent:
                desk = agent.parts.help
                assert desk is not None
                await wait_until(lambda: [f.fix_id for f in desk.fixes.offered()] == ["fix-script"], timeout=60,
                                 what="the script fetched and the fix offered")
                local = state.directory / "fix-scripts" / SHA
                assert local.read_bytes() == SCRIPT and local.stat().st_mode & 0o777 == 0o600
                ann = Caller(os.getuid(), "ann")
                result = await desk.run_fix(ann, "fix-script", {})
                assert result.ok and result.ran and "script-ran with 0 args" in result.detail, result

                local.write_bytes(b'#!/bin/sh\necho "not the signed script"\n')  # altered on the device
                result = await desk.run_fix(ann, "fix-script", {})
                assert result.ok and "script-ran with 0 args" in result.detail, result
                assert local.read_bytes() == SCRIPT

                served = store.stored_path(server.config.data_dir, SHA)
                served.write_bytes(b'#!/bin/sh\necho "the server\'s own script"\n')  # a server gone bad
                local.unlink()
                assert await desk.fixes.fetch_missing() == 0
                assert desk.fixes.offered() == [] and sorted(local.parent.iterdir()) == []
                refused = await desk.run_fix(ann, "fix-script", {})
                assert not refused.ran and "is offered on this device" in refused.detail
                device_runs = [e for e in agent.parts.authority.store.audit.entries() if e["event"] == "fix.ran"]
                assert len(device_runs) == 2

            served.write_bytes(SCRIPT)
            source = Source.from_agent_url(other.agent_url)
            context = tls.agent_client_context(other.ca_path, other.cert_path, other.key_path)
            with pytest.raises(OSError, match="404"):  # in a thread: the server runs on this loop
                await asyncio.to_thread(script_fetch.fetch, source, context, sha256=SHA, directory=state_dir / "stolen")
            assert not (state_dir / "stolen" / SHA).exists()
            anonymous = tls.agent_client_context(other.ca_path, None, None)
            with pytest.raises((OSError, ssl.SSLError)):
                await asyncio.to_thread(script_fetch.fetch, source, anonymous, sha256=SHA,
                                        directory=state_dir / "stolen")
