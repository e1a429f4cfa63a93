// Approvals: signed documents waiting for approvers, and one document shown field by field with
// "Approve with passkey". Everything shown is decoded HERE from the exact text that gets signed,
// and its hash is computed here; the server's own decoding is not trusted. Text nodes only.
import * as api from "../api.js";
import { badge, clear, errorBox, fmtTime, h, text, toast, unavailable } from "../dom.js";
import { bodySha256, signDocument } from "../passkeys.js";
import { can } from "../state.js";

export async function show(main, documentId) {
  if (documentId) return showDocument(main, documentId);
  const list = h("div", { id: "documents" });
  main.append(h("section", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, "Approvals"),
      h("span", { class: "muted" }, "Signed documents waiting for approvers (unattended grants, tasks, fixes, …)")),
    weakerPathNotice(), list));
  let data;
  try { data = await api.get("/api/v1/documents", { status: "pending" }); } catch (err) {
    list.append(unavailable("Signed documents", err));
    return;
  }
  const docs = data.documents || [];
  list.append(docs.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid documents" },
    h("thead", {}, h("tr", {}, ["Document", "Kind", "Status", "Approvals", "Created by", "Created"].map((c) => h("th", {}, c)))),
    h("tbody", {}, docs.map((d) => h("tr", { dataset: { document: d.document_id } },
      h("td", {}, h("a", { href: `#/approvals/${encodeURIComponent(d.document_id)}` }, printable(d.document_id))),
      h("td", {}, badge(d.kind)), h("td", {}, badge(d.status)),
      h("td", {}, `${(d.approvals || []).length} / ${text(d.approvals_needed)}`),
      h("td", {}, printable(d.created_by)), h("td", {}, fmtTime(d.created_at)))))))
    : h("p", { class: "muted", id: "no-documents" }, "Nothing waits for an approval."));
}

function weakerPathNotice() {
  return h("p", { class: "notice notice-muted", role: "note", id: "weaker-path" },
    "Approving here is the convenient path: this page signs exactly the text it shows you, but the server chooses ",
    "what to show, and a compromised server could show you a document it made up. For scripts, groups and anything ",
    "sensitive, use ", h("code", {}, "helpline approve sign"), " on your own machine — the strong path.");
}

async function showDocument(main, documentId) {
  const back = h("p", { class: "crumbs" }, h("a", { href: "#/approvals" }, "← Approvals"));
  let view;
  try { view = await api.get(`/api/v1/documents/${encodeURIComponent(documentId)}`); } catch (err) {
    main.append(back, err.status === 404 ? errorBox(err) : unavailable("Signed document", err));
    return;
  }
  const signed = view.document || {};
  const kind = signed.kind;
  const bodyText = typeof signed.body === "string" ? signed.body : "";
  let body = null;
  let problem = "";
  try { body = JSON.parse(bodyText); } catch (err) { problem = `the signed text is not JSON (${err.message})`; }
  if (!problem && (body === null || typeof body !== "object" || Array.isArray(body))) problem = "the signed text is not an object";
  const hash = await bodySha256(bodyText);
  if (!problem && view.body_sha256 !== hash) problem = "the server's hash is not the hash of the text it sent";
  const status = h("div", { id: "approve-status" });
  const button = h("button", { type: "button", class: "primary", id: "approve-passkey",
    onclick: () => approve(view.document_id, kind, bodyText, button, status) }, "Approve with passkey");
  button.disabled = Boolean(problem) || view.status === "withdrawn" || !can("approve_grants");
  main.append(h("section", { class: "page" }, back,
    h("div", { class: "page-head" }, h("h1", { id: "document-id" }, printable(view.document_id)), badge(kind),
      badge(view.status), h("div", { class: "actions" }, button)),
    weakerPathNotice(),
    problem ? h("p", { class: "notice notice-error", role: "alert", id: "document-problem" }, `Do not approve: ${problem}.`) : null,
    h("section", { class: "card" }, h("h2", {}, "What you sign"),
      h("dl", { class: "kv" },
        h("dt", {}, "SHA-256 of the signed text (computed in this browser)"),
        h("dd", { class: "mono", id: "document-sha256" }, hash),
        h("dt", {}, "Kind"), h("dd", {}, printable(kind))),
      body && !problem ? h("div", { id: "document-fields" }, fields(body)) : null,
      h("details", {}, h("summary", {}, "Signed text, exactly"), h("pre", { class: "out", id: "document-text" }, printable(bodyText)))),
    h("section", { class: "card" }, h("h2", {}, `Approvals (${(view.approvals || []).length} of ${text(view.approvals_needed)} needed)`),
      approvalsTable(view.approvals || []),
      h("p", { class: "muted" }, "As the server checks them: a convenience — each device checks the whole chain itself. ",
        printable(view.check || ""))),
    status));
}

/** Every field of the decoded body, recursively, as text. */
function fields(value) {
  if (Array.isArray(value)) {
    return value.length ? h("ul", { class: "plain" }, value.map((v) => h("li", {}, fields(v)))) : h("span", { class: "muted" }, "(none)");
  }
  if (value && typeof value === "object") {
    return h("dl", { class: "kv" }, Object.entries(value).flatMap(([k, v]) => [
      h("dt", { dataset: { field: k } }, printable(k)), h("dd", {}, fields(v), when(k, v))]));
  }
  return h("span", { class: "value" }, typeof value === "string" ? printable(value) : JSON.stringify(value));
}

/** Epoch-second fields also as a UTC date. */
function when(key, value) {
  if (typeof value !== "number" || !/(^not_|_at$)/.test(key)) return null;
  const d = new Date(value * 1000);
  return Number.isNaN(d.getTime()) ? null : h("span", { class: "muted" }, ` (${d.toISOString().replace(".000", "")})`);
}

/** Control, format (bidi) and invisible characters shown escaped, so a text cannot hide or reorder words. */
export function printable(value) {
  return String(value ?? "").replace(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function approvalsTable(approvals) {
  if (!approvals.length) return h("p", { class: "muted" }, "No approvals yet.");
  return h("table", { class: "grid approvals" },
    h("thead", {}, h("tr", {}, ["Credential", "Holder", "Type", "Server's check"].map((c) => h("th", {}, c)))),
    h("tbody", {}, approvals.map((a) => h("tr", { dataset: { credential: a.credential_id } },
      h("td", { class: "mono" }, printable(a.credential_id)), h("td", {}, printable(a.holder || "—")),
      h("td", {}, printable(a.type)), h("td", {}, a.valid ? badge("ok", "valid") : printable(a.problem || "not valid"))))));
}

async function approve(documentId, kind, bodyText, button, status) {
  button.disabled = true;
  clear(status);
  try {
    const approval = await signDocument(kind, bodyText);
    await api.post(`/api/v1/documents/${encodeURIComponent(documentId)}/approvals`, approval);
    toast("Approved with your passkey.");
    const main = document.getElementById("main");
    clear(main);
    await showDocument(main, documentId);
  } catch (err) {
    status.append(errorBox(err.name === "NotAllowedError" ? new Error("Passkey cancelled.") : err));
    button.disabled = false;
  }
}
