// Vulnerabilities: which advisories apply to the fleet (from the feeds an admin imported), and
// "which devices are exposed to CVE-X" in one search.
import * as api from "../api.js";
import { h, text, unavailable } from "../dom.js";
import { severityBadge } from "../cmdb_ui.js";

let severity = "";

export async function show(main, cve) {
  const search = h("input", { type: "search", id: "cve-search", placeholder: "CVE or advisory id, e.g. CVE-2024-1234  (/)",
    "data-search": "1", "aria-label": "Search a CVE", value: cve || "", maxlength: "200" });
  const exposedBox = h("div", { id: "cve-exposed" });
  const fleetBox = h("div", { id: "fleet-vulns" });
  const sev = h("select", { id: "filter-severity", "aria-label": "Severity", onchange: (ev) => {
    severity = ev.target.value; loadFleet(fleetBox);
  } }, ["", "critical", "high", "medium", "low", "unimportant", "unknown"].map((s) =>
    h("option", { value: s, selected: s === severity }, s || "Any severity")));
  main.append(h("section", { class: "page" }, h("div", { class: "page-head" }, h("h1", {}, "Vulnerabilities")),
    h("form", { class: "toolbar", id: "cve-form", onsubmit: (ev) => {
      ev.preventDefault();
      const id = search.value.trim();
      if (id) location.hash = `#/vulnerabilities/${encodeURIComponent(id)}`;
    } }, search, h("button", { type: "submit", class: "primary", id: "cve-go" }, "Which devices are exposed?")),
    exposedBox,
    h("section", { class: "card" }, h("h2", {}, "Fleet-wide"), h("div", { class: "toolbar" }, sev), fleetBox)));
  if (cve) await loadExposed(exposedBox, cve);
  await loadFleet(fleetBox);
}

async function loadExposed(box, cve) {
  try {
    const data = await api.get(`/api/v1/cmdb/vulnerabilities/${encodeURIComponent(cve)}/devices`);
    box.replaceChildren(h("section", { class: "card" },
      h("h2", { id: "cve-title" }, `${data.total} device${data.total === 1 ? "" : "s"} exposed to ${cve}`),
      data.rows > data.items.length ? h("p", { class: "muted" }, `First ${data.items.length} of ${data.rows} rows.`) : null,
      data.items.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "cve-devices" },
        h("thead", {}, h("tr", {}, ["Device", "Group", "Package", "Installed", "Fixed in", "Advisory", "Severity"]
          .map((c) => h("th", {}, c)))),
        h("tbody", {}, data.items.map((i) => h("tr", { dataset: { device: i.device_id } },
          h("td", {}, h("a", { href: `#/devices/${encodeURIComponent(i.device_id)}/vulns` }, text(i.hostname || i.device_id))),
          h("td", {}, text(i.group)), h("td", {}, text(i.package)), h("td", { class: "mono" }, text(i.version)),
          h("td", { class: "mono" }, i.fixed ? text(i.fixed) : "not fixed yet"), h("td", {}, text(i.advisory)),
          h("td", {}, severityBadge(i.severity)))))))
        : h("p", { class: "muted" }, "No device you may view is exposed (or no imported feed knows this id).")));
  } catch (err) { box.replaceChildren(unavailable("Exposure search", err)); }
}

async function loadFleet(box) {
  try {
    const data = await api.get("/api/v1/cmdb/vulnerabilities", { severity });
    box.replaceChildren(data.items.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "fleet-vulns-table" },
      h("thead", {}, h("tr", {}, ["Advisory", "Also known as", "Severity", "Devices", "Package", "Fixed in", "Summary"]
        .map((c) => h("th", {}, c)))),
      h("tbody", {}, data.items.map((v) => h("tr", { dataset: { id: v.id } },
        h("td", {}, h("a", { href: `#/vulnerabilities/${encodeURIComponent(v.id)}` }, text(v.id))),
        h("td", {}, text((v.aliases || []).join(", "))), h("td", {}, severityBadge(v.severity)),
        h("td", { class: "devices" }, String(v.devices)), h("td", {}, text(v.package)),
        h("td", { class: "mono" }, v.fixed ? text(v.fixed) : "—"), h("td", {}, text(v.summary)))))))
      : h("p", { class: "muted" }, "No imported advisory applies to devices you may view."));
  } catch (err) { box.replaceChildren(unavailable("Fleet vulnerabilities", err)); }
}
