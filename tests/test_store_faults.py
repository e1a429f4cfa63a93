"""Operable database faults (issue 12): JSON 503s, one log line per outage, one-line CLI errors.

The PostgreSQL test stops a private cluster (tests/pg_cluster.py) under a real ``helpline server``
process: the shared test database must stay up for everyone else.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from certs import tls
from server.api import middleware
from server.store import StoreUnavailable, open_database
from tests.harness import console_url, make_pki, running_server, wait_until
from tests.pg_cluster import private_cluster
from tests.procs import free_port, helpline, spawn, wait_for_port

POLL_FAILING = "event poll failing; retrying every 0.2 s"
POLL_BACK = "event poll works again"


def _log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _reached(path: Path, msg: str, count: int) -> bool:
    return sum(1 for entry in _log(path) if entry["msg"] == msg) == count


async def _call(port: int, ca: Path, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.request(
            method, f"https://localhost:{port}{path}", ssl=tls.agent_client_context(ca, None, None), **kwargs) as r:
        return r.status, dict(r.headers), await r.read()


def _error(body: bytes) -> dict[str, str]:
    parsed = json.loads(body)
    assert set(parsed) == {"error"} and set(parsed["error"]) == {"code", "message"}, parsed
    return dict(parsed["error"])


async def test_postgres_down_api_poller_and_cli(tmp_path: Path) -> None:
    """Database stopped under a running server: the API answers 503 store_unavailable as JSON (pages and
    static files need no database), the poller logs one line per outage and one per recovery, the CLI
    prints one line (exit 75) and the traceback only with --debug; everything works again after."""
    data = tmp_path / "data"
    make_pki(data / "pki")
    ca = data / "pki" / "ca.pem"
    log = tmp_path / "server.log"
    port = free_port()
    with private_cluster() as cluster:
        env = {"HELPLINE_DATABASE_URL": cluster.url}
        server_args = ("server", "--data", str(data), "--host", "127.0.0.1", "--public-host", "localhost",
                       "--agent-port", str(free_port()), "--console-port", str(port), "--log-format", "json")
        with spawn(*server_args, log=log, env=env) as server:
            wait_for_port(port, server, timeout=60)
            helpline("admin", "user", "create", "alice", "--role", "admin", "--generate-password", "--data", str(data),
                     env=env)
            token = helpline("admin", "user", "token", "alice", "--data", str(data), env=env).stdout.split()[-1]
            bearer = {"Authorization": f"Bearer {token}"}
            assert (await _call(port, ca, "GET", "/api/v1/devices", headers=bearer))[0] == 200

            for outage in (1, 2):
                cluster.stop()
                status, headers, body = await _call(port, ca, "GET", "/api/v1/devices", headers=bearer)
                assert status == 503 and _error(body)["code"] == "store_unavailable"
                assert headers["Content-Type"].startswith("application/json") and headers["Retry-After"] == "5"
                assert cluster.url.split("@")[1] not in body.decode()  # where the database is stays in the log
                status, _, body = await _call(port, ca, "POST", "/api/v1/auth/login",
                                              json={"username": "alice", "password": "wrong"})
                assert status == 503 and _error(body)["code"] == "store_unavailable"
                await wait_until(functools.partial(_reached, log, POLL_FAILING, outage), timeout=30, what="poller line")
                if outage == 1:
                    # No database needed: the console page; the errors stay JSON.
                    assert (await _call(port, ca, "GET", "/"))[0] == 200
                    status, _, body = await _call(port, ca, "GET", "/static/no-such-file.js")
                    assert status == 404 and _error(body)["code"] == "not_found"
                    status, _, body = await _call(port, ca, "GET", "/no/such/path")
                    assert status == 404 and _error(body)["code"] == "not_found"
                    # The CLI: one line, exit 75; the traceback only with --debug.
                    plain = helpline("admin", "device", "list", "--data", str(data), env=env, check=False)
                    assert plain.returncode == 75, plain.stderr
                    lines = plain.stderr.strip().splitlines()
                    assert len(lines) == 1 and lines[0].startswith("helpline: the database is unavailable: "), lines
                    assert "Traceback" not in plain.stderr and "asyncpg" not in plain.stderr
                    debug = helpline("admin", "device", "list", "--data", str(data), "--debug", env=env, check=False)
                    assert debug.returncode == 75 and "Traceback (most recent call last)" in debug.stderr
                    assert debug.stderr.strip().splitlines()[-1] == lines[0]
                cluster.start()

                async def answers() -> bool:
                    return (await _call(port, ca, "GET", "/api/v1/devices", headers=bearer))[0] == 200

                await wait_until(answers, timeout=30, interval=0.2, what="API back")
                await wait_until(functools.partial(_reached, log, POLL_BACK, outage), timeout=30, what="recovery line")

    poller = [e for e in _log(log) if e["logger"] == "server.events"]
    assert [e["msg"] for e in poller] == [POLL_FAILING, POLL_BACK] * 2
    failing, back = poller[0], poller[1]
    assert failing["reason"].startswith(("ConnectionRefusedError", "ConnectionResetError", "ConnectionDoesNotExistError",
                                         "CannotConnectNow", "AdminShutdownError", "OSError")), failing
    assert "exc" not in failing  # a reason, not a traceback
    assert back["failed_polls"] > 1, back  # the outage lasted several polls (how many depends on load), logged once
    unavailable = [e for e in _log(log) if e["msg"] == "request failed: database unavailable"]
    assert unavailable and all(e["reason"] for e in unavailable)
    # The other loops polling the database (every 0.5-1 s) also log an outage once and its end once.
    for logger in ("server.cmdb.webhooks", "server.tasks.feature"):
        entries = [e for e in _log(log) if e["logger"] == logger]
        assert len(entries) <= 4 and not any("exc" in e for e in entries), "\n".join(map(json.dumps, entries))


async def test_sqlite_unavailable_and_other_errors(tmp_path: Path) -> None:
    """SQLite: a database that cannot be opened is StoreUnavailable; a constraint violation is not
    (it is the statement's fault) and keeps its own type."""
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    with pytest.raises(StoreUnavailable, match="unavailable"):
        await open_database(f"sqlite:///{blocked / 'helpline.db'}")
    db = await open_database(f"sqlite:///{tmp_path / 'ok.db'}")
    try:
        await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
        await db.execute("INSERT INTO t (k) VALUES (?)", ("a",))
        with pytest.raises(sqlite3.IntegrityError):
            await db.execute("INSERT INTO t (k) VALUES (?)", ("a",))
    finally:
        await db.close()


async def test_failure_after_websocket_upgrade_closes_with_a_code(tmp_path: Path) -> None:
    """A handler failing after its websocket's 101 gets the socket closed 1013 (database) or 1011 (else),
    not an HTTP error page written into the websocket stream."""

    async def failing(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if request.query.get("db"):
            raise StoreUnavailable("ConnectionRefusedError: test")
        raise RuntimeError("a bug")

    app = web.Application(middlewares=[middleware.errors])
    app.on_response_prepare.append(middleware.remember_started)
    app.router.add_get("/ws", failing)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            for query, code in (("?db=1", 1013), ("", 1011)):
                async with http.ws_connect(f"http://127.0.0.1:{port}/ws{query}") as ws:
                    msg = await ws.receive(timeout=10)
                    assert msg.type == WSMsgType.CLOSE and msg.data == code, msg
            async with http.get(f"http://127.0.0.1:{port}/ws") as plain:  # no upgrade: a JSON error, not text
                assert plain.status == 400 and _error(await plain.read())["code"] == "invalid"
    finally:
        await runner.cleanup()


async def test_static_errors_are_json(tmp_path: Path) -> None:
    """A missing static file or a directory is the JSON 404; real files are still served."""
    async with running_server(tmp_path / "srv") as server, aiohttp.ClientSession(console_url(server)) as http:
        ssl = tls.agent_client_context(server.pki.ca_pem, None, None)
        for path in ("/static/missing.js", "/static/js", "/static/js/"):
            async with http.get(path, ssl=ssl) as resp:
                assert resp.status == 404 and _error(await resp.read())["code"] == "not_found", path
        async with http.get("/static/app.css", ssl=ssl) as resp:
            assert resp.status == 200 and resp.content_type == "text/css"


def test_cli_other_failures_are_one_line_too(tmp_path: Path) -> None:
    """A failure that is not an outage (a data directory whose database file is garbage) is one line
    naming the error, exit 1, with a hint; --debug adds the traceback."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "helpline.db").write_bytes(b"not a database" * 100)
    plain = helpline("admin", "device", "list", "--data", str(data), check=False)
    lines = plain.stderr.strip().splitlines()
    assert plain.returncode == 1 and len(lines) == 1, plain.stderr
    assert lines[0] == ("helpline: 'admin' failed: DatabaseError: file is not a database "
                        "(run again with --debug for the traceback)")
    debug = helpline("--debug", "admin", "device", "list", "--data", str(data), check=False)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
