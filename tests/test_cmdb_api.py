"""The CMDB REST API on the console port: rights per group, search/filter/sort/paging, software
search by version, changes, health, alerts, and the OpenAPI document covering every route."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate

from certs import tls
from protocol.messages import HealthSample
from server import devices
from server.api import context
from server.api.context import AUTHENTICATORS
from server.api.route import Gate
from server.app import HelplineServer
from server.auth.rights import ALL_RIGHTS, Principal, Right
from server.cmdb import health_store, inventory_store
from server.cmdb.sections import checksum
from tests.harness import console_url, running_server

PRINCIPALS = {
    "admin": Principal("u1", "admin", "admin", {"*": ALL_RIGHTS}),
    "lab-viewer": Principal("u2", "viewer", "viewer", {"lab": Right.VIEW_INVENTORY}),
    "no-rights": Principal("u3", "nobody", "viewer", {"lab": Right.REMOTE_VIEW}),
}


async def _test_authenticator(request: Any) -> Principal | None:
    return PRINCIPALS.get(request.headers.get("X-Test-User", ""))


def _inventory(host: str, ip: str, openssl: str) -> dict[str, Any]:
    return {"identity": {"hostname": host, "serial": f"SN-{host}"},
            "os": {"pretty_name": "Debian GNU/Linux 12 (bookworm)"},
            "network": {"interfaces": [{"name": "eth0", "is_up": True, "is_default_route": True,
                                        "ipv4": [{"address": ip}]}]},
            "software": {"packages": [{"name": "openssl", "version": openssl, "arch": "amd64"}]}}


async def _add(server: HelplineServer, device_id: str, group: str, host: str, ip: str, openssl: str,
               online: bool = False) -> None:
    inv = _inventory(host, ip, openssl)
    async with server.db.transaction() as tx:
        await devices.ensure_group(tx, group)
        await devices.register(tx, device_id, group, "s-" + device_id, time.time() + 86400)
        await inventory_store.apply_report(tx, device_id, full=True, sections=inv,
                                           checksums={k: checksum(v) for k, v in inv.items()}, now=time.time())
    if online:
        await devices.mark_hello(server.db, device_id, agent_version="t", screen_backend=None)


@pytest.fixture
async def api_server(tmp_path: Path) -> AsyncIterator[HelplineServer]:
    async with running_server(tmp_path / "srv") as server:
        server.console_app[AUTHENTICATORS].append(_test_authenticator)
        await _add(server, "dev-a", "lab", "alpha", "10.0.0.1", "3.0.11-1~deb12u2", online=True)
        await _add(server, "dev-b", "lab", "bravo", "10.0.0.2", "3.0.13-1~deb12u1")
        await _add(server, "dev-c", "office", "charlie", "10.0.1.3", "3.0.9-1")
        now = time.time()
        async with server.db.transaction() as tx:
            await health_store.ingest(tx, "dev-a", [HealthSample(seq=i, ts=now - 600 + i * 60,
                                                                 metrics={"cpu_percent": 10.0 * i, "disks": {"/": 3.0}})
                                                    for i in range(1, 6)], [], now)
        from server.cmdb import alerts

        await alerts.evaluate_health(server.db, "dev-a", [HealthSample(seq=5, ts=now, metrics={"disks": {"/": 3.0}})])
        yield server


async def _get(server: HelplineServer, path: str, user: str | None = "admin") -> tuple[int, Any]:
    ssl = tls.agent_client_context(server.pki.ca_pem, None, None)
    headers = {"X-Test-User": user} if user else {}
    async with aiohttp.ClientSession() as session, session.get(console_url(server) + path, ssl=ssl,
                                                               headers=headers) as resp:
        return resp.status, await resp.json()


_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def _public(server: HelplineServer, path: str) -> bool:
    """Public exactly where the route declares PUBLIC (every method of a path agrees here)."""
    return any(r.path == path and r.access is Gate.PUBLIC for r in server.console_app[context.ROUTES].values())


async def test_openapi_is_valid_public_and_covers_every_route(api_server: HelplineServer) -> None:
    """The document is valid OpenAPI 3.1, served without login, and documents exactly the /api/v1 routes
    (method + path) registered on the console app, each with its right, and public only where the app is."""
    status, doc = await _get(api_server, "/api/v1/openapi.json", user=None)
    assert status == 200
    validate(doc)
    #: Outside /api/v1, the operations routes (/healthz, /readyz, /metrics) are documented too.
    operations = {"/healthz", "/readyz", "/metrics"}
    registered = {(r.method, r.resource.canonical) for r in api_server.console_app.router.routes()
                  if r.resource is not None and r.method != "HEAD"
                  and (r.resource.canonical.startswith("/api/v1/") or r.resource.canonical in operations)}
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops
                  if method in _HTTP_METHODS}
    assert len(registered) > 40
    assert documented - registered == set(), "documented but not registered"
    assert registered - documented == set(), "registered but not documented"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if op["security"]:
                assert f"`{op['x-helpline-right']}`" in op["description"], f"{method} {path}: right not described"
            assert (op["security"] == []) == _public(api_server, path), f"{method} {path}: public mismatch"
            if method in ("post", "put", "delete") and op["security"]:
                assert {"session": [], "csrf": []} in op["security"], f"{method} {path}: CSRF not required"
    stream = doc["paths"]["/api/v1/sessions/{session_id}/stream"]["get"]
    assert stream["x-helpline-websocket"] and "101" in stream["responses"] and "Origin" in stream["description"]
    assert doc["components"]["securitySchemes"]["session"]["name"] == "__Host-helpline"


async def test_device_list_rights_filters_sort_and_paging(api_server: HelplineServer) -> None:
    """Lists only groups the caller may view; q/group/status/alert filters, sort/order and paging work in SQL."""
    assert (await _get(api_server, "/api/v1/devices", user=None))[0] == 401
    assert (await _get(api_server, "/api/v1/devices", user="no-rights"))[0] == 403
    status, body = await _get(api_server, "/api/v1/devices")
    assert status == 200 and body["total"] == 3 and [d["hostname"] for d in body["items"]] == ["alpha", "bravo",
                                                                                              "charlie"]
    item = body["items"][0]
    assert {k: item[k] for k in ("id", "group", "status", "ip", "alerts_open")} == {
        "id": "dev-a", "group": "lab", "status": "online", "ip": "10.0.0.1", "alerts_open": 1}
    assert item["os"].startswith("Debian")
    _, mine = await _get(api_server, "/api/v1/devices", user="lab-viewer")
    assert {d["id"] for d in mine["items"]} == {"dev-a", "dev-b"} and mine["total"] == 2
    # Another group's name filters to nothing: no answer tells which groups exist.
    assert await _get(api_server, "/api/v1/devices?group=office", user="lab-viewer") == (
        200, {"items": [], "total": 0, "page": 1, "per_page": 50})
    assert [d["id"] for d in (await _get(api_server, "/api/v1/devices?q=10.0.1"))[1]["items"]] == ["dev-c"]
    assert [d["id"] for d in (await _get(api_server, "/api/v1/devices?q=SN-BRAVO"))[1]["items"]] == ["dev-b"]
    assert [d["id"] for d in (await _get(api_server, "/api/v1/devices?status=online"))[1]["items"]] == ["dev-a"]
    assert [d["id"] for d in (await _get(api_server, "/api/v1/devices?alert=open"))[1]["items"]] == ["dev-a"]
    _, desc = await _get(api_server, "/api/v1/devices?sort=hostname&order=desc&per_page=2&page=1")
    assert [d["hostname"] for d in desc["items"]] == ["charlie", "bravo"] and desc["total"] == 3
    _, page2 = await _get(api_server, "/api/v1/devices?sort=hostname&order=desc&per_page=2&page=2")
    assert [d["hostname"] for d in page2["items"]] == ["alpha"]
    assert (await _get(api_server, "/api/v1/devices?per_page=201"))[0] == 400
    assert (await _get(api_server, "/api/v1/devices?sort=evil;drop"))[0] == 400


async def test_device_detail_inventory_software_changes(api_server: HelplineServer) -> None:
    """Detail, inventory, software and changes answer for a visible device; 403 for another group, 404 unknown."""
    status, detail = await _get(api_server, "/api/v1/devices/dev-a", user="lab-viewer")
    assert status == 200 and detail["alerts"][0]["rule"] == "disk_free"
    # A device of a group the caller has no right on answers exactly like one that does not exist.
    foreign = await _get(api_server, "/api/v1/devices/dev-c", user="lab-viewer")
    missing = await _get(api_server, "/api/v1/devices/nope", user="lab-viewer")
    assert foreign == missing == (404, {"error": {"code": "not_found", "message": "no such device"}})
    assert (await _get(api_server, "/api/v1/devices/dev-c/inventory", user="lab-viewer")) == missing
    _, inv = await _get(api_server, "/api/v1/devices/dev-a/inventory")
    assert inv["sections"]["identity"]["hostname"] == "alpha"
    _, sw = await _get(api_server, "/api/v1/devices/dev-a/software?q=ssl")
    assert [p["name"] for p in sw["items"]] == ["openssl"]
    _, ch = await _get(api_server, "/api/v1/devices/dev-a/changes?since=2020-01-01T00:00:00Z&section=software")
    assert [c["change"] for c in ch["items"]] == ["section_added"]
    _, none = await _get(api_server, f"/api/v1/devices/dev-a/changes?since={time.time() + 60}")
    assert none["items"] == []


async def test_fleet_software_search_by_version(api_server: HelplineServer) -> None:
    """'Which devices have openssl < 3.0.13' uses Debian version ordering and the caller's groups."""
    _, hits = await _get(api_server, "/api/v1/software?name=openssl&version_lt=3.0.13")
    assert sorted(h["device_id"] for h in hits["items"]) == ["dev-a", "dev-c"]
    _, lab = await _get(api_server, "/api/v1/software?name=openssl&version_lt=3.0.13", user="lab-viewer")
    assert [h["device_id"] for h in lab["items"]] == ["dev-a"]
    _, exact = await _get(api_server, "/api/v1/software?name=openssl&version=3.0.9-1")
    assert [h["device_id"] for h in exact["items"]] == ["dev-c"]
    assert (await _get(api_server, "/api/v1/software"))[0] == 400


async def test_health_and_alerts(api_server: HelplineServer) -> None:
    """Health returns points for from/to/step; alerts filter by status and device, within the caller's groups."""
    now = time.time()
    status, health = await _get(api_server, f"/api/v1/devices/dev-a/health?from={now - 900}&to={now}&step=60")
    assert status == 200 and sum(p["samples"] for p in health["points"]) == 5
    assert (await _get(api_server, f"/api/v1/devices/dev-a/health?from={now - 10**6}&to={now}&step=1"))[0] == 400
    _, open_ = await _get(api_server, "/api/v1/alerts?status=open")
    assert [(a["device_id"], a["rule"], a["severity"]) for a in open_["items"]] == [("dev-a", "disk_free",
                                                                                     "critical")]
    _, other = await _get(api_server, "/api/v1/alerts?device=dev-c")
    assert other["items"] == []
    assert await _get(api_server, "/api/v1/alerts?device=dev-c", user="lab-viewer") == (200, {"items": []})
