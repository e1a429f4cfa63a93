"""The CMDB model through the API (issue 17 part B): relations and impact with a cycle, the primary
user from login history, networks, licence over-use alerts that fire and resolve, CSV, and a
vulnerability feed matched against this machine's real installed packages, cleared by an upgrade."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.collectors.os_info import collect_os
from agent.collectors.software import installed_software
from certs import tls
from server import devices
from server.api.context import AUTHENTICATORS
from server.app import HelplineServer
from server.auth.rights import ALL_RIGHTS, Principal, Right
from server.cmdb import derived, inventory_store, licences, settings
from server.cmdb.sections import checksum
from tests.harness import console_url, running_server

PRINCIPALS = {
    "admin": Principal("u1", "admin", "admin", {"*": ALL_RIGHTS}),
    "lab-viewer": Principal("u2", "viewer", "viewer", {"lab": Right.VIEW_INVENTORY}),
}


async def _auth(request: Any) -> Principal | None:
    return PRINCIPALS.get(request.headers.get("X-Test-User", ""))


async def _report(server: HelplineServer, device_id: str, group: str, inv: dict[str, Any]) -> None:
    """Store an inventory the way ingest does (same transaction, same derived refresh)."""
    now = time.time()
    async with server.db.transaction() as tx:
        await devices.ensure_group(tx, group)
        if await tx.fetchone("SELECT id FROM devices WHERE id = ?", (device_id,)) is None:
            await devices.register(tx, device_id, group, "s-" + device_id, now + 86400)
        result = await inventory_store.apply_report(tx, device_id, full=True, sections=inv,
                                                    checksums={k: checksum(v) for k, v in inv.items()}, now=now)
        await derived.after_inventory(tx, device_id, {c.section for c in result.changes}, now)


async def _call(server: HelplineServer, method: str, path: str, user: str = "admin", body: Any = None
                ) -> tuple[int, Any]:
    ssl = tls.agent_client_context(server.pki.ca_pem, None, None)
    async with aiohttp.ClientSession() as http, http.request(method, console_url(server) + path, ssl=ssl, json=body,
                                                             headers={"X-Test-User": user}) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[HelplineServer]:
    async with running_server(tmp_path / "srv") as server:
        server.console_app[AUTHENTICATORS].append(_auth)
        yield server


def _inv(host: str, packages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"identity": {"hostname": host}, "software": {"packages": packages}, **extra}


async def test_relations_impact_with_cycle_primary_user_and_networks(srv: HelplineServer) -> None:
    """Declared runs/depends_on relations walk transitively (a cycle ends the walk and is reported);
    the primary user is the one with most logins; networks come from addresses and the gateway."""
    logins = {"entries": [{"user": u, "time": f"2026-05-0{d}T08:00:00Z"}
                          for u, d in (("alice", 1), ("alice", 2), ("bob", 3), ("alice", 4))]}
    network = {"default_gateway": "10.1.0.254", "interfaces": [
        {"name": "eth0", "is_default_route": True, "ipv4": [{"address": "10.1.0.7", "netmask": "255.255.255.0"}]}]}
    await _report(srv, "db-1", "lab", _inv("db1", [], logins=logins, network=network))
    await _report(srv, "web-1", "office", _inv("web1", []))
    ids = {}
    for name in ("payroll", "database", "auth"):
        status, body = await _call(srv, "POST", "/api/v1/cmdb/services", body={"name": name})
        assert status == 201, body
        ids[name] = body["id"]
    assert (await _call(srv, "POST", "/api/v1/cmdb/services", body={"name": "auth"}))[0] == 409
    assert (await _call(srv, "POST", "/api/v1/cmdb/services", "lab-viewer", body={"name": "x"}))[0] == 403
    for kind, source, target in (("runs", ("device", "db-1"), ("service", ids["database"])),
                                 ("depends_on", ("service", ids["payroll"]), ("service", ids["database"])),
                                 ("depends_on", ("service", ids["payroll"]), ("service", ids["auth"])),
                                 ("depends_on", ("service", ids["auth"]), ("service", ids["payroll"])),  # cycle
                                 ("depends_on", ("device", "web-1"), ("service", ids["payroll"]))):
        status, body = await _call(srv, "POST", "/api/v1/cmdb/relations", body={
            "kind": kind, "source": {"type": source[0], "id": source[1]}, "target": {"type": target[0], "id": target[1]}})
        assert status == 201, body
    bad = {"kind": "runs", "source": {"type": "service", "id": ids["auth"]}, "target": {"type": "device", "id": "db-1"}}
    assert (await _call(srv, "POST", "/api/v1/cmdb/relations", body=bad))[0] == 400

    status, impact = await _call(srv, "GET", "/api/v1/devices/db-1/impact")
    assert status == 200
    breaks = {(i["type"], i["id"]): i["depth"] for i in impact["breaks"]}
    assert breaks == {("service", ids["database"]): 1, ("service", ids["payroll"]): 2,
                      ("service", ids["auth"]): 3, ("device", "web-1"): 3}
    assert impact["cycles"], "the payroll ↔ auth cycle is reported"
    # A viewer of 'lab' sees the services but web-1 (office) only as a count.
    status, limited = await _call(srv, "GET", "/api/v1/devices/db-1/impact", "lab-viewer")
    assert status == 200 and limited["breaks_hidden"] == 1
    assert all(i["id"] != "web-1" for i in limited["breaks"])
    status, needs = await _call(srv, "GET", f"/api/v1/cmdb/services/{ids['payroll']}/impact")
    assert {(i["type"], i["id"]) for i in needs["needs"]} == {("service", ids["database"]), ("service", ids["auth"]),
                                                               ("device", "db-1")}

    status, rel = await _call(srv, "GET", "/api/v1/devices/db-1/relations")
    assert status == 200 and rel["primary_user"] == "alice" and rel["logins"][0]["observations"] == 3
    assert rel["networks"] == [{"interface": "eth0", "subnet": "10.1.0.0/24", "address": "10.1.0.7",
                                "gateway": "10.1.0.254"}]
    assert (await _call(srv, "GET", "/api/v1/devices/db-1/primary-user"))[1]["primary_user"] == "alice"
    # Deleting a service drops its relations: the device's impact shrinks.
    assert (await _call(srv, "DELETE", f"/api/v1/cmdb/services/{ids['database']}"))[0] == 200
    assert (await _call(srv, "GET", "/api/v1/devices/db-1/impact"))[1]["breaks"] == []


async def _open_overuse(srv: HelplineServer) -> dict[str, str]:
    rows = await srv.db.fetchall("SELECT device_id, status FROM alerts WHERE rule = 'licence_overuse'"
                                 " ORDER BY id")  # the newest alert of a device last
    return {r["device_id"]: r["status"] for r in rows}


async def test_licence_overuse_alert_fires_and_resolves_and_csv(srv: HelplineServer) -> None:
    """Three installs of a 2-seat product open an over-use alert on the newest device; removing one
    resolves it; the CSV carries the counts; version ranges limit what counts."""
    for n, version in enumerate(("7.4.1", "7.5.0", "7.6.2", "24.2.0")):
        await _report(srv, f"d{n}", "lab", _inv(f"h{n}", [{"name": "libreoffice-core", "version": version}]))
    status, lic = await _call(srv, "POST", "/api/v1/cmdb/licences", body={
        "product": "LibreOffice 7", "pattern": "LibreOffice*", "seats": 2, "version_min": "7", "version_below": "8",
        "owner": "it@example.org", "expires_at": time.time() + 86400 * 10})
    assert status == 201, lic
    assert (lic["installed"], lic["over"], lic["status"]) == (3, 1, "over_use")
    assert await _open_overuse(srv) == {"d2": "open"}
    status, alerts = await _call(srv, "GET", "/api/v1/alerts?status=open")
    assert [a["device_id"] for a in alerts["items"] if a["rule"] == "licence_overuse"] == ["d2"]
    # d1 removes the package: 2 installs for 2 seats, the alert resolves (ingest path).
    await _report(srv, "d1", "lab", _inv("h1", []))
    assert await _open_overuse(srv) == {"d2": "resolved"}
    status, items = await _call(srv, "GET", "/api/v1/cmdb/licences")
    assert items["items"][0]["installed"] == 2 and items["items"][0]["status"] == "expiring"
    status, text = await _call(srv, "GET", "/api/v1/cmdb/licences.csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert status == 200 and rows[0]["product"] == "LibreOffice 7" and rows[0]["installed"] == "2"
    # Fewer seats re-opens it on the newest of the two remaining devices.
    body = {"product": "LibreOffice 7", "pattern": "libreoffice*", "seats": 1, "version_min": "7", "version_below": "8"}
    assert (await _call(srv, "PUT", f"/api/v1/cmdb/licences/{lic['id']}", body=body))[0] == 200
    assert (await _open_overuse(srv))["d2"] == "open"
    # The rule's switch: off resolves the open alert at the next pass, on opens it again.
    await settings.set_rule(srv.db, "licence_overuse", {"enabled": False})
    await licences.evaluate_all(srv.db, time.time())
    assert (await _open_overuse(srv))["d2"] == "resolved"
    await settings.set_rule(srv.db, "licence_overuse", {"enabled": True})
    await licences.evaluate_all(srv.db, time.time())
    assert (await _open_overuse(srv))["d2"] == "open"
    assert (await _call(srv, "DELETE", f"/api/v1/cmdb/licences/{lic['id']}"))[0] == 200
    assert "open" not in (await _open_overuse(srv)).values()


def _real_packages() -> list[tuple[str, str]]:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${Version}\n", "bash", "coreutils", "tar"],
                         capture_output=True, text=True, check=True).stdout
    return [tuple(line.split("\t")) for line in out.splitlines() if line]  # type: ignore[misc]


async def test_vulnerability_feed_matches_real_packages_and_upgrade_clears(srv: HelplineServer) -> None:
    """An OSV + Debian tracker feed built around this machine's real dpkg versions matches the device
    with the real inventory; a fixed version clears the match; CVE lookup names the exposed devices."""
    software = installed_software()
    os_section = collect_os()
    real = dict(_real_packages())
    assert {"bash", "coreutils", "tar"} <= set(real), real
    codename = os_section.get("codename") or "bookworm"
    await _report(srv, "real", "lab", {"identity": {"hostname": "real"}, "os": os_section, "software": software})
    await _report(srv, "other", "office", {"identity": {"hostname": "other"}, "os": os_section,
                                            "software": {"packages": [{"name": "bash", "version": "1:99", "source": "dpkg"}]}})
    eco = f"Debian:{os_section.get('version_id')}"
    osv = [{"id": "DSA-TEST-1", "aliases": ["CVE-2099-0001"], "summary": "bash test",
            "affected": [{"package": {"ecosystem": eco, "name": "bash"},
                          "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"},
                                                                      {"fixed": real["bash"] + "+fix1"}]}]}],
            "database_specific": {"severity": "HIGH"}},
           {"id": "DSA-TEST-2", "aliases": ["CVE-2099-0002"],
            "affected": [{"package": {"ecosystem": eco, "name": "coreutils"},
                          "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "0.1-1"}]}]}]}]
    status, result = await _call(srv, "POST", "/api/v1/cmdb/vulnerability-feeds",
                                 body={"name": "osv-test", "format": "osv", "data": osv})
    assert status == 201, result
    assert result["matches"] == 1 and result["devices"] == 1
    debian: dict[str, Any] = {"tar": {"CVE-2099-0003": {"description": "tar test", "releases": {
        codename: {"status": "open", "urgency": "medium", "repositories": {codename: real["tar"]}}}}},
        "coreutils": {"CVE-2099-0004": {"releases": {codename: {"status": "resolved", "fixed_version": "0"}}}}}
    status, result = await _call(srv, "POST", "/api/v1/cmdb/vulnerability-feeds",
                                 body={"name": "debian", "format": "auto", "data": debian})
    assert status == 201 and result["matches"] == 1, result

    status, dev = await _call(srv, "GET", "/api/v1/devices/real/vulnerabilities")
    assert [(v["id"], v["severity"], v["version"]) for v in dev["items"]] == [
        ("DSA-TEST-1", "high", real["bash"]), ("CVE-2099-0003", "medium", real["tar"])]
    status, who = await _call(srv, "GET", "/api/v1/cmdb/vulnerabilities/cve-2099-0001/devices")
    assert [i["device_id"] for i in who["items"]] == ["real"] and who["items"][0]["fixed"] == real["bash"] + "+fix1"
    assert (who["total"], who["rows"]) == (1, 1)
    status, paged = await _call(srv, "GET", "/api/v1/cmdb/vulnerabilities/cve-2099-0001/devices?page=2&per_page=1")
    assert status == 200 and paged["items"] == [] and paged["total"] == 1
    status, fleet = await _call(srv, "GET", "/api/v1/cmdb/vulnerabilities", "lab-viewer")
    assert {i["id"] for i in fleet["items"]} == {"DSA-TEST-1", "CVE-2099-0003"}

    # The upgrade: a new inventory with bash at the fixed version clears that match only.
    upgraded = json.loads(json.dumps(software))
    for pkg in upgraded["packages"]:
        if pkg["name"] == "bash":  # the fixed source version, as an upgrade brings (no binNMU suffix)
            pkg["version"] = real["bash"] + "+fix1"
            pkg.pop("source_version", None)
    await _report(srv, "real", "lab", {"identity": {"hostname": "real"}, "os": os_section, "software": upgraded})
    assert (await _call(srv, "GET", "/api/v1/cmdb/vulnerabilities/CVE-2099-0001/devices"))[1]["items"] == []
    assert [v["id"] for v in (await _call(srv, "GET", "/api/v1/devices/real/vulnerabilities"))[1]["items"]] == [
        "CVE-2099-0003"]
    # Re-importing the Debian feed with the CVE fixed clears it too (the feed changed).
    debian["tar"]["CVE-2099-0003"]["releases"][codename] = {"status": "resolved", "fixed_version": real["tar"]}
    status, result = await _call(srv, "POST", "/api/v1/cmdb/vulnerability-feeds",
                                 body={"name": "debian", "format": "debian", "data": debian})
    assert status == 201 and result["matches"] == 0
    assert (await _call(srv, "POST", "/api/v1/cmdb/vulnerability-feeds", "lab-viewer",
                        body={"name": "x", "format": "osv", "data": []}))[0] in (403, 404)
