// Signed documents: every unattended grant and task authorization (and the rest) the server relays, with
// its status as the server sees it. The server signs none of them and cannot: approvers do, with
// `helpline approve sign` or a passkey on the Approvals page, and each device verifies them itself.
import * as api from "../api.js";
import { badge, clear, fmtTime, h, text, unavailable } from "../dom.js";
import { printable } from "./approvals.js";

const STATUSES = ["", "pending", "approved", "withdrawn"];

export async function show(main) {
  const list = h("div", { id: "documents-list" });
  const status = h("select", { id: "documents-status", "aria-label": "Status",
    onchange: () => load(list, status.value) }, STATUSES.map((s) => h("option", { value: s }, s || "all")));
  main.append(h("section", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, "Signed documents"), status),
    h("p", { class: "muted" }, "Unattended grants and maintenance tasks run only under documents approvers signed "
      + "with credentials the org root certified; each device checks them against the root it was installed with. "
      + "Write one with ", h("code", {}, "helpline approve draft"), ", submit it with ",
      h("code", {}, "helpline approve submit"), " and sign it with ", h("code", {}, "helpline approve sign"),
      " (or a passkey on the Approvals page)."),
    list));
  await load(list, "");
}

/** Devices and groups a body names, as text. */
function scope(d) {
  return [...(d.devices || []), ...(d.groups || []).map((g) => `group ${g}`)].join(", ");
}

/** What the document lets happen: a grant's actions, a task's action (and script hash). */
function what(d) {
  const body = d.body || {};
  if (d.kind === "grant") return (body.actions || []).join(", ");
  if (d.kind === "task") {
    const parts = [body.action, body.schedule ? `cron ${body.schedule}` : "once"];
    if (body.script_sha256) parts.push(`script ${body.script_sha256.slice(0, 12)}…`);
    return parts.join(" · ");
  }
  return "";
}

async function load(list, status) {
  let data;
  try { data = await api.get("/api/v1/documents", status ? { status } : undefined); } catch (err) {
    clear(list).append(unavailable("Signed documents", err));
    return;
  }
  const docs = data.documents || [];
  clear(list).append(docs.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid documents" },
    h("thead", {}, h("tr", {}, ["Document", "Kind", "Status", "Scope", "What", "Valid", "Approvals"]
      .map((c) => h("th", {}, c)))),
    h("tbody", {}, docs.map((d) => h("tr", { dataset: { document: d.document_id } },
      h("td", {}, h("a", { href: `#/approvals/${encodeURIComponent(d.document_id)}` }, printable(d.document_id))),
      h("td", {}, badge(d.kind)), h("td", {}, badge(d.status)),
      h("td", {}, printable(text(scope(d)))), h("td", {}, printable(text(what(d)))),
      h("td", {}, d.body && d.body.not_after ? `${fmtTime(d.body.not_before)} → ${fmtTime(d.body.not_after)}` : ""),
      h("td", {}, `${(d.approvals || []).filter((a) => a.valid).length} / ${text(d.approvals_needed)}`))))))
    : h("p", { class: "muted", id: "no-documents" }, "No signed documents."));
}
