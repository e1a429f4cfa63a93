"""The API frame itself: every live route is declared with a right, every error is the JSON error
body, and a route that was not declared cannot be served.

These walk the live ``app.router`` of both listeners (not the declaration table), so a route
added any other way than :func:`server.api.add_routes` fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from server import api
from server.accounts import admin
from server.api import context
from server.api.route import Gate
from server.app import HelplineServer
from server.auth.rights import ALL_RIGHTS, ANY_GROUP, Right
from server.errors import ApiError
from tests.harness import enroll_agent, running_server
from tests.test_accounts_support import client, make_user


def _live_routes(app: web.Application) -> list[Any]:
    return [r for r in app.router.routes()]


def _concrete(path: str, value: str = "x") -> str:
    return re.sub(r"\{[^}]+\}", value, path)


async def _error_body(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    assert resp.content_type == "application/json", (resp.method, resp.url, resp.status, resp.content_type)
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert all(isinstance(v, str) and v for v in body["error"].values()), body
    return body


async def _token(server: HelplineServer, name: str, group: str, rights: Right) -> str:
    account = await make_user(server, name, "viewer")
    if group != ANY_GROUP:
        await admin.create_group(server.db, group, actor="test")
    await admin.assign_rights(server.db, account.user_id, group, rights, actor="test")
    return (await admin.create_token(server.db, name, "routes test", 3600, actor="test")).token


@pytest.fixture
async def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_server(tmp_path / "srv") as srv:
        yield srv


async def test_every_live_route_is_declared_with_access(server: HelplineServer) -> None:
    """Both listeners: each route aiohttp would serve has a declared Route, with a right or an explicit gate."""
    for app, allowed_gates in ((server.console_app, {Gate.PUBLIC, Gate.AUTHENTICATED}),
                               (server.agent_app, {Gate.DEVICE_CERT})):
        declared = app[context.ROUTES]
        live = _live_routes(app)
        assert live, "no routes at all"
        missing = [f"{r.method} {r.resource.canonical if r.resource else '?'}" for r in live if r not in declared]
        assert missing == [], f"routes without a declared right: {missing}"
        for route in declared.values():
            if isinstance(route.access, Gate):
                assert route.access in allowed_gates, (route.method, route.path, route.access)
            else:
                assert route.access is not Right.NONE
    console = {(r.method, r.path) for r in server.console_app[context.ROUTES].values()}
    assert len(console) > 40


async def test_unauthenticated_calls_get_401_json_everywhere_but_public(server: HelplineServer) -> None:
    """Without credentials every non-public route answers 401 with the JSON error body."""
    routes = {(r.method, r.path): r for r in server.console_app[context.ROUTES].values()}
    async with client(server) as http:
        for (method, path), route in sorted(routes.items()):
            if route.access is Gate.PUBLIC:
                continue
            async with http.request(method, _concrete(path), json={}) as resp:
                assert resp.status == 401, (method, path, resp.status)
                assert (await _error_body(resp))["error"]["code"] == "unauthenticated"


async def test_a_caller_without_rights_is_refused_everywhere(server: HelplineServer, tmp_path: Path) -> None:
    """An account with no right anywhere: every right-guarded route answers 403 or 404 with the JSON
    body — for a real device the same 404 as for a missing one (no existence leak across groups)."""
    state = await enroll_agent(server, tmp_path / "agent", group="lab")
    nobody = await _token(server, "nobody", "elsewhere", Right.VIEW_INVENTORY)
    routes = {(r.method, r.path): r for r in server.console_app[context.ROUTES].values()}
    async with client(server, Authorization=f"Bearer {nobody}") as http:
        for (method, path), route in sorted(routes.items()):
            if isinstance(route.access, Gate):
                continue
            if route.access is Right.VIEW_INVENTORY and route.scope is None:
                continue  # nobody holds view_inventory on "elsewhere": listings answer, filtered to it
            target = _concrete(path, state.device_id if "{device_id}" in path else "x")
            async with http.request(method, target, json={}) as resp:
                assert resp.status in (403, 404), (method, path, resp.status, await resp.text())
                await _error_body(resp)
        async with http.get(f"/api/v1/devices/{state.device_id}") as real, http.get("/api/v1/devices/nope") as none:
            assert real.status == none.status == 404
            assert await real.json() == await none.json() == {"error": {"code": "not_found",
                                                                        "message": "no such device"}}


async def test_bad_bodies_and_unknown_routes_answer_the_json_error_body(server: HelplineServer,
                                                                        tmp_path: Path) -> None:
    """Malformed JSON, wrong types, oversized bodies, unknown paths and wrong methods: 4xx JSON, never 500."""
    state = await enroll_agent(server, tmp_path / "agent", group="lab")
    root = await _token(server, "root", ANY_GROUP, ALL_RIGHTS)
    body_routes = [r for r in server.console_app[context.ROUTES].values() if r.body is not None]
    assert len(body_routes) > 10
    async with client(server, Authorization=f"Bearer {root}") as http:
        for route in body_routes:
            path = _concrete(route.path.replace("{device_id}", state.device_id))
            # Objects named by other ids do not exist here: their scope answers 404 before the body is read.
            missing_object = isinstance(route.scope, api.Scope) and route.scope.param != "device_id"
            for raw in (b"{", b"[]", b'{"reason": 1e999}', b"\x00\xff"):
                async with http.request(route.method, path, data=raw,
                                        headers={"Content-Type": "application/json"}) as resp:
                    assert 400 <= resp.status < 500, (route.method, route.path, raw, resp.status)
                    await _error_body(resp)
            async with http.request(route.method, path, data=b'{"x": "' + b"a" * (route.max_body + 10) + b'"}',
                                    headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == (404 if missing_object else 413), (route.method, route.path, resp.status)
                await _error_body(resp)
        async with http.get("/api/v1/no/such/thing") as resp:
            assert resp.status == 404
            await _error_body(resp)
        async with http.delete("/api/v1/devices") as resp:
            assert resp.status == 405
            await _error_body(resp)
        async with http.get("/api/v1/devices/x/health?step=nan") as resp:
            assert resp.status in (400, 404)
            await _error_body(resp)
        async with http.get("/api/v1/devices?page=nan") as resp:
            assert resp.status == 400
            await _error_body(resp)


async def test_undeclared_route_cannot_be_served(tmp_path: Path) -> None:
    """A handler put on the router behind the table's back is refused (deny by default), and a
    declaration without a real right is rejected when it is written."""
    with pytest.raises(ValueError, match="PUBLIC"):
        api.Route("GET", "/api/v1/x", _never, Right.NONE)
    with pytest.raises(ValueError, match="scope"):
        api.Route("GET", "/api/v1/x", _never, api.PUBLIC, api.GLOBAL)

    app = web.Application()
    api.install(app)
    app.router.add_get("/api/v1/sneaky", _never)
    api.add_routes(app, [api.Route("GET", "/api/v1/boom", _boom, api.PUBLIC)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            async with http.get("/api/v1/sneaky") as resp:
                assert resp.status == 404
                assert (await _error_body(resp))["error"]["code"] == "not_found"
            async with http.get("/api/v1/boom") as resp:
                assert resp.status == 500
                assert (await _error_body(resp))["error"] == {"code": "internal",
                                                              "message": "internal error; see the server log"}
    finally:
        await runner.cleanup()


async def _never(_request: web.Request) -> web.StreamResponse:
    raise AssertionError("an undeclared route was served")


async def _boom(_request: web.Request) -> web.StreamResponse:
    raise RuntimeError("secret detail that must not reach the client")


def test_api_error_is_the_only_error_type() -> None:
    """ApiError carries status, code and message in that order."""
    err = ApiError(409, "busy", "a viewer is attached")
    assert (err.status, err.code, err.message) == (409, "busy", "a viewer is attached")
