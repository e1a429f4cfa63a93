"""Vulnerabilities by source package (issue 17): a real agent reports this machine's dpkg packages with
their source package and source version; a Debian Security Tracker fixture and an OSV Debian entry keyed
by source names installed here (``glibc`` → ``libc6``…, ``openssl`` → ``libssl3``…) match exactly the
binaries built from them; an entry keyed by a binary name matches nothing; the upgrade clears the match."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from agent.collectors.os_info import collect_os
from agent.collectors.software import parse_dpkg_query
from agent.config import AgentConfig
from certs import tls
from server.api.context import AUTHENTICATORS
from server.app import HelplineServer
from server.auth.rights import ALL_RIGHTS, Principal
from server.cmdb import derived, inventory_store, schemas
from server.cmdb.sections import checksum
from tests.harness import console_url, enroll_agent, running_agent, running_server, wait_until

ADMIN = Principal("u1", "admin", "admin", {"*": ALL_RIGHTS})


async def _auth(request: Any) -> Principal | None:
    return ADMIN if request.headers.get("X-Test-User") == "admin" else None


async def _call(server: HelplineServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    ssl = tls.agent_client_context(server.pki.ca_pem, None, None)
    async with aiohttp.ClientSession() as http, http.request(method, console_url(server) + path, ssl=ssl, json=body,
                                                             headers={"X-Test-User": "admin"}) as resp:
        return resp.status, await resp.json()


def _installed_from(source: str) -> dict[str, tuple[str, str]]:
    """Installed binaries built from ``source`` per dpkg itself: name → (version, source version)."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}\t${Package}\t${Version}\t${source:Package}"
                          "\t${source:Version}\n"], capture_output=True, text=True, check=True).stdout
    found: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        status, name, version, src, src_version = line.split("\t")
        if status == "installed" and src == source:
            found[name] = (version, src_version)
    return found


def test_parser_keeps_source_only_when_it_differs() -> None:
    """Seven fields: the source package/version kept when they differ; the old five-field lines still parse."""
    text = ("installed\tlibssl3\t3.0.1-1\tamd64\tDebian\topenssl\t3.0.1-1\n"
            "installed\tbash\t5.2-2+b8\tamd64\tDebian\tbash\t5.2-2\n"
            "installed\ttar\t1.34\tamd64\tDebian\n")
    packages = {p.name: p for p in parse_dpkg_query(text)}
    assert (packages["libssl3"].source_package, packages["libssl3"].source_version) == ("openssl", None)
    assert (packages["bash"].source_package, packages["bash"].source_version) == (None, "5.2-2")
    assert (packages["tar"].source_package, packages["tar"].source_version) == (None, None)


async def test_tracker_and_osv_match_by_source_package_and_upgrade_clears(tmp_path: Path) -> None:
    """Real agent, real dpkg: the feeds name source packages; the matches are the installed binaries of those
    sources (versions compared as source versions); a binary-keyed entry matches nothing; upgrading clears."""
    glibc, openssl = _installed_from("glibc"), _installed_from("openssl")
    assert "libc6" in glibc and "libssl3" in openssl, (glibc, openssl)
    os_section = collect_os()
    codename, version_id = os_section.get("codename") or "bookworm", os_section.get("version_id") or "12"
    async with running_server(tmp_path / "srv") as server:
        server.console_app[AUTHENTICATORS].append(_auth)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=0.5, health_interval_s=3600.0,
                             inventory_interval_s=3600.0)
        async with running_agent(state, config):
            async def software_stored() -> bool:
                return "software" in await inventory_store.get_inventory(server.db, state.device_id)

            await wait_until(software_stored, timeout=120, what="software stored")
        software = (await inventory_store.get_inventory(server.db, state.device_id))["software"]
        schemas.check_section("software", software)
        libc6 = next(p for p in software["packages"] if p["name"] == "libc6")
        assert libc6["source_package"] == "glibc"

        glibc_src = glibc["libc6"][1]
        tracker: dict[str, Any] = {
            "glibc": {"CVE-2099-0201": {"description": "glibc test", "releases": {codename: {
                "status": "resolved", "fixed_version": glibc_src + "+fix1", "urgency": "high"}}}},
            "libc6": {"CVE-2099-0202": {"releases": {codename: {"status": "open", "urgency": "low"}}}}}
        status, result = await _call(server, "POST", "/api/v1/cmdb/vulnerability-feeds",
                                     {"name": "debian", "format": "debian", "data": tracker})
        assert status == 201, result
        assert (result["matches"], result["devices"]) == (len(glibc), 1)
        openssl_src = openssl["libssl3"][1]
        osv = [{"id": "DSA-TEST-0301", "aliases": ["CVE-2099-0301"],
                "affected": [{"package": {"ecosystem": f"Debian:{version_id}", "name": "openssl"},
                              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"},
                                                                          {"fixed": openssl_src + "+fix1"}]}]}]}]
        status, result = await _call(server, "POST", "/api/v1/cmdb/vulnerability-feeds",
                                     {"name": "osv", "format": "osv", "data": osv})
        assert status == 201 and result["matches"] == len(openssl), result

        status, who = await _call(server, "GET", "/api/v1/cmdb/vulnerabilities/CVE-2099-0201/devices")
        assert {(i["package"], i["version"]) for i in who["items"]} == {(n, v[0]) for n, v in glibc.items()}
        assert who["total"] == 1
        status, who = await _call(server, "GET", "/api/v1/cmdb/vulnerabilities/CVE-2099-0301/devices")
        assert {i["package"] for i in who["items"]} == set(openssl)
        status, none = await _call(server, "GET", "/api/v1/cmdb/vulnerabilities/CVE-2099-0202/devices")
        assert none["items"] == []  # the tracker names sources; a binary name is not one

        # The upgrade: glibc's binaries at the fixed source version clear that CVE only.
        upgraded = json.loads(json.dumps(software))
        for pkg in upgraded["packages"]:
            if pkg["name"] in glibc:
                pkg["version"] = glibc_src + "+fix1"
                pkg.pop("source_version", None)
        sections = {**await inventory_store.get_inventory(server.db, state.device_id), "software": upgraded}
        now = time.time()
        async with server.db.transaction() as tx:  # as ingest stores a report
            applied = await inventory_store.apply_report(tx, state.device_id, full=True, sections=sections,
                                                         checksums={k: checksum(v) for k, v in sections.items()},
                                                         now=now)
            await derived.after_inventory(tx, state.device_id, {c.section for c in applied.changes}, now)
        assert not applied.resync
        status, who = await _call(server, "GET", "/api/v1/cmdb/vulnerabilities/CVE-2099-0201/devices")
        assert who["items"] == []
        status, dev = await _call(server, "GET", f"/api/v1/devices/{state.device_id}/vulnerabilities")
        assert {v["id"] for v in dev["items"]} == {"DSA-TEST-0301"}
