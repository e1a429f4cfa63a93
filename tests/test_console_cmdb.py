"""The CMDB model in the console (Chromium, real server): business services and relations declared
through the forms, a device's relations with its primary user and impact (a cycle shown), a
service's impact; licences created and edited with over-use and the CSV; vulnerabilities per
device, fleet-wide and "which devices are exposed to CVE-X"; a viewer sees no write controls."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from server import devices
from server.app import HelplineServer
from server.auth.rights import Right
from server.cmdb import derived, inventory_store, relations, vulns
from server.cmdb.sections import checksum
from tests.harness import running_server
from tests.test_accounts_support import make_user
from tests.test_console_support import console_browser

OS = {"id": "debian", "version_id": "12", "codename": "bookworm"}


async def _report(server: HelplineServer, device_id: str, group: str, inv: dict[str, Any]) -> None:
    """Store an inventory as ingest does (same transaction, same derived refresh)."""
    now = time.time()
    async with server.db.transaction() as tx:
        await devices.ensure_group(tx, group)
        if await tx.fetchone("SELECT id FROM devices WHERE id = ?", (device_id,)) is None:
            await devices.register(tx, device_id, group, "s-" + device_id, now + 86400)
        result = await inventory_store.apply_report(tx, device_id, full=True, sections=inv,
                                                    checksums={k: checksum(v) for k, v in inv.items()}, now=now)
        await derived.after_inventory(tx, device_id, {c.section for c in result.changes}, now)


def _inv(host: str, packages: list[tuple[str, str]], **extra: Any) -> dict[str, Any]:
    return {"identity": {"hostname": host}, "os": OS,
            "software": {"packages": [{"name": n, "version": v, "source": "dpkg"} for n, v in packages]}, **extra}


async def _fleet(server: HelplineServer) -> None:
    logins = {"entries": [{"user": u, "time": f"2026-05-0{d}T08:00:00Z"}
                          for u, d in (("alice", 1), ("alice", 2), ("bob", 3), ("alice", 4))]}
    await _report(server, "db-1", "lab", _inv("db1", [("openssl", "3.0.9-1"), ("libreoffice-core", "7.4.1")],
                                              logins=logins))
    await _report(server, "web-1", "lab", _inv("web1", [("openssl", "3.0.13-1"), ("libreoffice-core", "7.5.0")]))
    await _report(server, "pc-9", "lab", _inv("<b>pc9</b>", [("openssl", "3.0.2-1"), ("libreoffice-core", "7.6.2")]))
    feed = [vulns.Advisory("DSA-9999-1", "high", "openssl: <script>x</script>", ["CVE-2099-0101"],
                           [vulns.Affected("debian", "12", "openssl", "0", "3.0.11-1")])]
    await vulns.import_feed(server.db, "test", feed, time.time())


async def test_services_relations_impact_licences_and_vulnerabilities(tmp_path: Path) -> None:
    """Admin declares services and relations in the forms; the device page shows the primary user and
    what breaks (with the cycle); licences over-use appears and clears on edit; CSV downloads; the CVE
    search names exactly the exposed devices; agent-reported markup stays text."""
    async with running_server(tmp_path / "srv") as server:
        await _fleet(server)
        admin = await make_user(server, "root", "admin", groups={"*": None})
        async with console_browser(server) as console:
            page = console.page
            await console.login(admin)

            # Services and relations through the forms.
            await page.goto(f"{console.base}/#/services")
            for name in ("Payroll", "Database"):
                await page.fill("#service-name", name)
                await page.click("#service-create")
                await expect(page.locator("#services a.service-name", has_text=name)).to_have_count(1)
            await page.select_option("#relation-kind", "runs")
            await page.fill("#relation-source-device", "db-1")
            await page.select_option("#relation-target-service", label="Database")
            await page.click("#relation-create")
            await expect(page.locator("#services tr", has_text="Database").locator("td").nth(3)).to_have_text("1")
            await page.select_option("#relation-kind", "depends_on")
            await page.select_option("#relation-source-type", "service")
            await page.select_option("#relation-source-service", label="Payroll")
            await page.select_option("#relation-target-type", "service")
            await page.select_option("#relation-target-service", label="Database")
            await page.click("#relation-create")
            await expect(page.locator("#services tr", has_text="Payroll").locator("td").nth(3)).to_have_text("1")
            ids = {r["name"]: r["id"] for r in await server.db.fetchall("SELECT id, name FROM cmdb_services")}
            async with server.db.transaction() as tx:  # the cycle: Database also depends on Payroll
                await relations.add_relation(tx, "depends_on", ("service", ids["Database"]),
                                             ("service", ids["Payroll"]), "test", time.time())

            # The device: primary user, relations, impact with the cycle.
            await page.goto(f"{console.base}/#/devices/db-1/relations")
            await expect(page.locator("#primary-user")).to_have_text("alice (3 logins)")
            breaks = page.locator("#impact-breaks tbody tr")
            await expect(breaks).to_have_count(2)
            await expect(breaks.nth(0)).to_have_attribute("data-id", ids["Database"])
            await expect(breaks.nth(0).locator("td.depth")).to_have_text("1")
            await expect(breaks.nth(1)).to_have_attribute("data-id", ids["Payroll"])
            await expect(breaks.nth(1).locator("td.depth")).to_have_text("2")
            await expect(page.locator("#impact-cycles li.cycle")).to_have_count(1)
            await expect(page.locator("#impact-cycles")).to_contain_text("Payroll → ")
            # The service: what it needs (Database, and the device that runs it).
            await breaks.nth(1).locator("a", has_text="Payroll").click()
            await expect(page.locator("#service-title")).to_have_text("Payroll")
            needs = page.locator("#impact-needs tbody tr")
            await expect(needs).to_have_count(2)
            await expect(page.locator("#impact-needs")).to_contain_text("db1")
            await expect(page.locator("#service-relations tr")).to_have_count(2)

            # Licences: 3 installs of a 2-seat product → over-use; 5 seats → unused seats.
            await page.goto(f"{console.base}/#/licences")
            await page.click("#licence-new")
            await page.fill("#licence-product", "LibreOffice 7")
            await page.fill("#licence-pattern", "libreoffice*")
            await page.fill("#licence-seats", "2")
            await page.fill("#licence-version-min", "7")
            await page.fill("#licence-version-below", "8")
            await page.click("#licence-save")
            row = page.locator("#licences tbody tr", has_text="LibreOffice 7")
            await expect(row).to_have_attribute("data-status", "over_use")
            await expect(row.locator("td.installed")).to_have_text("3")
            await expect(row.locator("td.over")).to_have_text("1")
            await expect(page.locator("#licence-summary")).to_have_text("1 entitlement(s), 1 over-used")
            rows = await server.db.fetchall("SELECT device_id FROM alerts WHERE rule = 'licence_overuse'"
                                            " AND status = 'open'")
            assert [r["device_id"] for r in rows] == ["pc-9"]  # the newest enrolment is the excess
            csv_text = await page.evaluate(
                "fetch(document.getElementById('licences-csv').href).then((r) => r.text())")
            assert csv_text.splitlines()[1].startswith("LibreOffice 7,libreoffice*,7,8,2,3,0,1,over_use")
            await row.locator("button.edit").click()
            await expect(page.locator("#licence-seats")).to_have_value("2")
            await page.fill("#licence-seats", "5")
            await page.click("#licence-save")
            await expect(row).to_have_attribute("data-status", "unused_seats")
            await expect(row.locator("td.unused")).to_have_text("2")
            await row.locator("td.installed button").click()
            await expect(page.locator("tr.installs li")).to_have_count(3)

            # Vulnerabilities: fleet-wide, the CVE search, the device tab; markup stays text.
            await page.goto(f"{console.base}/#/vulnerabilities")
            fleet = page.locator("#fleet-vulns-table tbody tr")
            await expect(fleet).to_have_count(1)
            await expect(fleet.locator("td.devices")).to_have_text("2")
            await expect(fleet).to_contain_text("openssl: <script>x</script>")
            await page.fill("#cve-search", "cve-2099-0101")
            await page.click("#cve-go")
            exposed = page.locator("#cve-devices tbody tr")
            await expect(exposed).to_have_count(2)
            assert sorted(await exposed.evaluate_all("rows => rows.map((r) => r.dataset.device)")) == ["db-1", "pc-9"]
            await expect(page.locator("#cve-devices")).to_contain_text("<b>pc9</b>")
            await page.goto(f"{console.base}/#/devices/web-1/vulns")
            await expect(page.locator("#device-vulns-none")).to_be_visible()
            await page.goto(f"{console.base}/#/devices/db-1/vulns")
            await expect(page.locator("#device-vulns tbody tr")).to_have_count(1)
            await expect(page.locator("#device-vulns")).to_contain_text("3.0.11-1")
            assert not console.csp_violations(), console.errors
            assert not [e for e in console.errors if "pageerror" in e], console.errors

        # A viewer reads the same pages without any write control.
        viewer = await make_user(server, "vic", "viewer", groups={"lab": Right.VIEW_INVENTORY})
        async with console_browser(server) as console:
            page = console.page
            await console.login(viewer)
            await page.goto(f"{console.base}/#/services")
            await expect(page.locator("#services tbody tr")).to_have_count(2)
            await expect(page.locator("#service-form, #relation-form")).to_have_count(0)
            await page.goto(f"{console.base}/#/licences")
            await expect(page.locator("#licences tbody tr")).to_have_count(1)
            await expect(page.locator("#licence-new, #licence-form, button.edit")).to_have_count(0)
