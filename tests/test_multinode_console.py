"""The console on node A runs a session whose tunnel ends meet on node C (issue 20: sessions across nodes).

Two real nodes (:class:`HelplineServer` in this loop, their own TLS listeners) share the org PKI, one
PostgreSQL schema and a real nats-server; a real agent on Xvfb holds its control channel on C. Node C's
console is reached as ``https://127.0.0.1:…`` and A's as ``https://localhost:…``: two hosts, so the
browser's cookie for A is never sent to C — the stream there is opened only with A's ticket.
Needs HELPLINE_TEST_PG_URL, nats-server, Xvfb and Chromium; fails, not skips, without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from playwright.async_api import expect

from agent.config import AgentConfig
from agent.consent.scripted import ScriptedConsentUI
from agent.consent.tk_app import ALLOW_BG
from certs import tls
from common.keyfile import load_or_create
from server.accounts import admin
from server.app import HelplineServer
from server.requests import repository as requests_repo
from server.sessions import SESSIONS
from server.sessions.tickets import digest
from server.support_codes.settings import SupportCodeSettings
from tests import pg_store
from tests.harness import console_url, enroll_agent, make_pki, running_agent, running_server, wait_until
from tests.nats_server import NatsServer, nats_server
from tests.procs import spawn
from tests.test_accounts_support import make_user
from tests.test_console_support import console_browser
from tests.test_screen_support import tk_app
from tests.test_session_helpers import click_colour, configure_agent
from tests.test_viewer_cli import read_png, run_viewer
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

ROOT_COLOUR = (0x33, 0x66, 0x99)
#: Key files every node of one deployment holds alike (server/shared_keys.py).
SHARED_KEY_FILES = ("support-codes.pepper", "tickets.key")


def _same_keys(*data_dirs: Path) -> None:
    """The nodes' data directories hold the same shared keys (as an operator copies them)."""
    first, *others = data_dirs
    first.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in SHARED_KEY_FILES:
        load_or_create(first / name, 32)
        for other in others:
            other.mkdir(parents=True, exist_ok=True, mode=0o700)
            target = other / name
            target.write_bytes((first / name).read_bytes())
            target.chmod(0o600)


@contextlib.asynccontextmanager
async def nodes_a_c(tmp_path: Path, nats: NatsServer) -> AsyncIterator[tuple[HelplineServer, HelplineServer]]:
    """Node A (https://localhost:…) and node C (https://127.0.0.1:…) on one PostgreSQL schema and the bus."""
    if not os.environ.get("HELPLINE_TEST_PG_URL"):
        raise RuntimeError("the multi-node tests need HELPLINE_TEST_PG_URL (nodes share one PostgreSQL)")
    pki = make_pki(tmp_path / "pki")
    _same_keys(tmp_path / "a", tmp_path / "c")
    common: dict[str, Any] = {"pki_dir": pki, "database_url": pg_store.url_for(tmp_path / "shared"),
                              "nats_url": nats.url, "support_codes": SupportCodeSettings(nodes=2)}
    async with running_server(tmp_path / "a", node_id="node-a", **common) as a, \
            running_server(tmp_path / "c", node_id="node-c", public_host="127.0.0.1", **common) as c:
        assert a.bus is not None and c.bus is not None
        yield a, c


def _ctx(node: HelplineServer) -> ssl.SSLContext:
    return tls.agent_client_context(node.pki.ca_pem, None, None)


async def _call(node: HelplineServer, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(
            method, f"{console_url(node)}{path}", json=body, ssl=_ctx(node),
            headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json(content_type=None)


async def _token(node: HelplineServer, name: str) -> str:
    await admin.create_group(node.db, "lab", actor="test")
    await admin.create_account(node.db, name, "technician", actor="test")
    await admin.assign_rights(node.db, name, "lab", None, actor="test")
    return (await admin.create_token(node.db, name, "multinode", None, actor="test")).token


async def _open_stream(url: str, node: HelplineServer, origin: str) -> int:
    """Try a websocket upgrade: 101, or the refusal's status."""
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, ssl=_ctx(node), headers={"Origin": origin}) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def _live_state(node: HelplineServer, session_id: str) -> str | None:
    live = node.console_app[SESSIONS].live.get(session_id)
    return None if live is None else live.machine.state.value


async def _audit(node: HelplineServer, action: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await node.db.fetchall("SELECT * FROM audit_log WHERE action = ? ORDER BY seq",
                                                    (action,))]


async def test_browser_on_node_a_runs_a_session_on_node_c(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Signed in on A only: control of a device on C, consent on the device, its screen on the canvas, a key
    typed in the browser reaches the device, End session ends it — the stream ran on C with A's ticket."""
    subprocess.run(["xsetroot", "-display", xvfb.display, "-solid", "#" + bytes(ROOT_COLOUR).hex()], check=True,
                   timeout=10)
    with nats_server(tmp_path / "nats") as nats:
        async with nodes_a_c(tmp_path, nats) as (a, c):
            tech = await make_user(a, "tess", "technician", groups={"lab": None})
            state = await enroll_agent(c, tmp_path / "agent", group="lab")
            config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0)
            async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
                await asyncio.wait_for(agent.client.ready.wait(), 20)
                await wait_until(lambda: c.connections.get(state.device_id) is not None, timeout=20,
                                 what="the channel on C")
                async with console_browser(a) as console:
                    page = console.page
                    await console.login(tech)
                    await page.goto(f"{console.base}/#/devices/{state.device_id}")
                    await page.click("#start-control")
                    await page.fill("#session-reason", "multinode")
                    await page.click("#session-confirm")
                    banner = page.locator("#consent-banner")
                    await expect(banner).to_have_attribute("data-state", "offered", timeout=15_000)
                    session_id = page.url.rsplit("/", 1)[1]
                    assert session_id in c.console_app[SESSIONS].live
                    assert session_id not in a.console_app[SESSIONS].live
                    await click_colour(xvfb.display, ALLOW_BG, timeout=20)
                    await expect(banner).to_have_attribute("data-mode", "control", timeout=20_000)

                    async def canvas_shows_root() -> bool:
                        pixel = await page.evaluate("""() => { const c = document.querySelector('#screen');
                            if (c.width < 100) return null;
                            return Array.from(c.getContext('2d').getImageData(5, c.height - 5, 1, 1).data); }""")
                        return pixel is not None and all(abs(x - y) <= 12 for x, y in zip(pixel[:3], ROOT_COLOUR))

                    try:
                        await wait_until(canvas_shows_root, timeout=30, what="the device's screen on the canvas")
                    except AssertionError:
                        print("console errors:", console.errors)
                        raise
                    taken = await _audit(c, "session.stream_ticket.taken")
                    assert [r["target"] for r in taken] == [session_id]
                    assert console_url(a) in taken[0]["details"]  # A's page, its ticket, C's relay
                    assert c.console_app[SESSIONS].live[session_id].people.viewers == ["tess"]

                    async with tk_app(xvfb.display, 600, 360) as app:
                        await app.command("focus")
                        start = len(app.lines)
                        await expect(page.locator("#screen")).to_have_attribute("data-capture-keys", "1")
                        await page.evaluate("document.querySelector('#screen').focus()")
                        await page.keyboard.press("KeyQ")
                        await app.expect(lambda line: line == "entry q", timeout=20, start=start)

                    await page.click("#end-session")  # to A, which forwards it to C
                    await expect(banner).to_have_attribute("data-state", "ended", timeout=15_000)
                    await wait_until(lambda: session_id not in c.console_app[SESSIONS].live, timeout=10,
                                     what="the session ended on C")
                    row = await a.db.fetchone("SELECT end_reason, ended_by FROM sessions WHERE id = ?", (session_id,))
                    assert row is not None and row["ended_by"] == "technician", row
                    assert console.csp_violations() == []
                    assert not [e for e in console.errors if e.startswith("pageerror")]


async def test_tickets_refused_when_replayed_or_from_a_foreign_origin_and_the_cli_follows(
        tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """A ticket opens C's stream once, from A's origin only; ``helpline viewer`` given A's URL streams from C."""
    with nats_server(tmp_path / "nats") as nats:
        async with nodes_a_c(tmp_path, nats) as (a, c):
            token = await _token(a, "ann")
            state = await enroll_agent(c, tmp_path / "agent", group="lab")
            setup = configure_agent(xvfb.display, ScriptedConsentUI([True, True, True]))
            async with running_agent(state, setup=setup) as agent, tk_app(xvfb.display):
                await asyncio.wait_for(agent.client.ready.wait(), 20)
                await wait_until(lambda: c.connections.get(state.device_id) is not None, timeout=20,
                                 what="the channel on C")
                status, view = await _call(a, "POST", f"/api/v1/devices/{state.device_id}/sessions", token,
                                           {"mode": "view"})
                assert status == 201 and view["node_url"] == console_url(c).replace("localhost", "127.0.0.1"), view
                sid = view["session_id"]
                await wait_until(lambda: _live_state(c, sid) in ("consented", "streaming"),
                                 timeout=20, what="consent")
                status, got = await _call(a, "GET", f"/api/v1/sessions/{sid}", token)  # forwarded to C
                assert status == 200 and got["node"] == "node-c" and got["state"] in ("consented", "streaming"), got

                async def ticket() -> dict[str, Any]:
                    status, minted = await _call(a, "POST", f"/api/v1/sessions/{sid}/stream-ticket", token)
                    assert status == 201, minted
                    return dict(minted)

                first = await ticket()
                assert first["url"].startswith(f"wss://127.0.0.1:{c.console_port}/") and first["node"] == "node-c"
                assert first["origin"] == console_url(a)
                foreign = await ticket()
                assert await _open_stream(foreign["url"], c, "https://evil.example") == 403
                unspent = await c.db.fetchone("SELECT used_at FROM stream_tickets WHERE token_hash = ?",
                                              (digest(foreign["ticket"]),))
                assert unspent is not None and unspent["used_at"] is None  # a foreign page cannot burn it
                assert await _open_stream(first["url"], c, console_url(c)) == 403  # not the origin it was minted for
                second = await ticket()
                assert await _open_stream(second["url"], c, console_url(a)) == 101
                assert await _open_stream(second["url"], c, console_url(a)) == 403  # replayed
                stored = {r["token_hash"] for r in await a.db.fetchall("SELECT token_hash FROM stream_tickets")}
                assert digest(second["ticket"]) in stored and second["ticket"] not in stored  # only hashes kept
                refused = [r["details"] for r in await _audit(c, "session.stream_ticket.refused")]
                assert any("origin" in d for d in refused) and any("replayed" in d for d in refused), refused

                # The first stream's close ended that session: a new one for the CLI, given A's URL only.
                status, view = await _call(a, "POST", f"/api/v1/devices/{state.device_id}/sessions", token,
                                           {"mode": "view"})
                assert status == 201, view
                sid = view["session_id"]
                await wait_until(lambda: _live_state(c, sid) in ("consented", "streaming"),
                                 timeout=20, what="consent")
                snapshot = tmp_path / "screen.png"
                code, out, err = await run_viewer(f"wss://localhost:{a.console_port}/api/v1/sessions/{sid}/stream",
                                                  "--ca", str(a.pki.ca_pem), "--snapshot", str(snapshot),
                                                  token=token, timeout=60)
                assert code == 0, err
                assert "live on node node-c" in err and f"saved {snapshot}" in out
                pixels = read_png(snapshot)
                assert np.abs(pixels[20:130, 20:180].astype(int) - [0, 0, 255]).max() < 40  # the Tk app's red block
                assert token not in out + err


async def test_connect_from_a_support_request_on_node_a_starts_the_session_on_node_c(
        tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """The Queue's Connect on A (``request_id``) for a device on C: the session starts on C, the request
    records it and is claimed; End on A ends it on C."""
    with nats_server(tmp_path / "nats") as nats:
        async with nodes_a_c(tmp_path, nats) as (a, c):
            token = await _token(a, "ann")
            state = await enroll_agent(c, tmp_path / "agent", group="lab")
            prompts = ScriptedConsentUI([])  # nobody answers: the session stays offered while the test looks
            async with running_agent(state, setup=configure_agent(xvfb.display, prompts)) as agent:
                await asyncio.wait_for(agent.client.ready.wait(), 20)
                await wait_until(lambda: c.connections.get(state.device_id) is not None, timeout=20,
                                 what="the channel on C")
                created, _ = await requests_repo.open_request(c.db, requests_repo.NewRequest(  # as the device's
                    device_id=state.device_id, local_id="r-1", group_name="lab", requester="ann",  # Get help does
                    summary="printer offline", details="", urgency="normal", screenshot=None, diagnostics=[],
                    attempt=None))
                request_id = created["id"]
                status, view = await _call(a, "POST", f"/api/v1/devices/{state.device_id}/sessions", token,
                                           {"mode": "view", "request_id": request_id})
                assert status == 201 and view["node"] == "node-c", view
                sid = view["session_id"]
                assert sid in c.console_app[SESSIONS].live and sid not in a.console_app[SESSIONS].live
                assert re.match(r"^About your request #\d+: printer offline$", view["reason"]), view["reason"]
                row = await a.db.fetchone("SELECT state, first_session_at FROM support_requests WHERE id = ?",
                                          (request_id,))
                assert row is not None and row["state"] == "claimed" and row["first_session_at"] is not None, row
                status, ended = await _call(a, "POST", f"/api/v1/sessions/{sid}/end", token)  # forwarded to C
                assert status == 200 and ended["state"] == "ended", ended
                assert sid not in c.console_app[SESSIONS].live


async def test_support_code_client_on_node_c_gets_its_session_from_node_a(
        tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """A code made on A, redeemed by ``helpline support`` connected to C: A lists the client as waiting, and its
    session, started on A, is started on C (the client's node); Allow on its prompt, then End on A ends it."""
    with nats_server(tmp_path / "nats") as nats:
        async with nodes_a_c(tmp_path, nats) as (a, c):
            token = await _token(a, "ann")
            status, code = await _call(a, "POST", "/api/v1/support-codes", token, {"group": "lab"})
            assert status == 201, code
            bundle = tmp_path / "helpline-support.toml"
            async with aiohttp.ClientSession() as http, http.get(
                    f"{console_url(c)}/api/v1/support-codes/bundle", ssl=_ctx(c),
                    headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 200
                bundle.write_text(await response.text())
            assert f"127.0.0.1:{c.console_port}" in bundle.read_text()  # the client connects to C
            with spawn("support", "--bundle", str(bundle), code["code"], "--display", xvfb.display,
                       log=tmp_path / "client.log", env={"DISPLAY": xvfb.display}) as proc:
                async def waiting_on_a() -> list[dict[str, Any]]:
                    _s, listed = await _call(a, "GET", "/api/v1/support-codes", token)
                    return [client for client in listed["clients"] if client["waiting"]]

                async def any_waiting() -> bool:
                    return bool(await waiting_on_a())

                await wait_until(any_waiting, timeout=40, what="the support client waiting, as A lists it")
                client_id = (await waiting_on_a())[0]["id"]
                assert c.connections.get(client_id) is not None and a.connections.get(client_id) is None
                status, view = await _call(a, "POST", f"/api/v1/support-clients/{client_id}/sessions", token,
                                           {"mode": "view", "reason": "contractor laptop"})
                assert status == 201 and view["node"] == "node-c", view
                sid = view["session_id"]
                assert sid in c.console_app[SESSIONS].live
                await click_colour(xvfb.display, ALLOW_BG, timeout=30)
                await wait_until(lambda: _live_state(c, sid) in ("consented", "streaming"), timeout=20,
                                 what="the client's consent")
                status, ended = await _call(a, "POST", f"/api/v1/sessions/{sid}/end", token)
                assert status == 200 and ended["state"] == "ended", ended
                await wait_until(lambda: proc.poll() is not None, timeout=30, what="the support client to exit")
            row = await a.db.fetchone("SELECT session_id FROM support_clients WHERE id = ?", (client_id,))
            assert row is not None and row["session_id"] == sid
