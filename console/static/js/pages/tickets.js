// Tickets (issue 19): ITSM connectors (admins), linking a session or request to a ticket, creating one from
// a request, and the write-back status of each — failures shown, retried by an admin. Secrets go in, never out:
// the API answers only "set".
import * as api from "../api.js";
import { badge, clear, fmtTime, h, text, toast, unavailable } from "../dom.js";
import { session } from "../state.js";

const isAdmin = () => Boolean(session.me && session.me.is_admin);
const field = (label, input) => h("label", { class: "field" }, h("span", {}, label), input);

export async function show(main) {
  let connectors;
  try {
    connectors = (await api.get("/api/v1/tickets/connectors")).connectors;
  } catch (err) { main.append(unavailable("Tickets", err)); return; }
  const form = isAdmin() ? connectorForm() : null;
  const page = h("section", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, "Tickets"),
      h("div", { class: "actions" }, isAdmin() ? h("button", { type: "button", class: "primary", id: "connector-new",
        onclick: () => form.open(null) }, "New connector") : null)),
    form ? form.el : null,
    connectorTable(connectors, form),
    linkPanel(connectors));
  main.append(page);
  if (isAdmin()) page.append(await writebacks());
}

function connectorTable(connectors, form) {
  if (!connectors.length) return h("p", { class: "muted" }, "No ticket connectors configured.");
  const cols = isAdmin() ? ["Name", "Kind", "URL", "User", "Secret", "Enabled", "Updated", ""] : ["Name", "Kind"];
  return h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "connectors" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c)))),
    h("tbody", {}, connectors.map((c) => h("tr", { dataset: { id: c.id } },
      h("td", { class: "name" }, text(c.name)), h("td", {}, text(c.kind)),
      isAdmin() ? [h("td", { class: "mono" }, text(c.url)), h("td", {}, text(c.username)),
        h("td", { class: "secret" }, badge(c.secret === "set" ? "ok" : "warning", c.secret)),
        h("td", {}, text(c.enabled)), h("td", {}, `${fmtTime(c.updated_at)} by ${c.updated_by}`),
        h("td", {}, h("button", { type: "button", class: "link edit", onclick: () => form.open(c) }, "Edit"))] : [])))));
}

function connectorForm() {
  const inputs = {
    name: h("input", { id: "connector-name", required: true, maxlength: "64" }),
    kind: h("select", { id: "connector-kind" }, ["servicenow", "jira", "webhook"].map((k) => h("option", { value: k }, k))),
    url: h("input", { id: "connector-url", required: true, type: "url", placeholder: "https://example.service-now.com" }),
    username: h("input", { id: "connector-username", maxlength: "200", autocomplete: "off" }),
    auth: h("select", { id: "connector-auth" }, h("option", { value: "basic" }, "basic"),
      h("option", { value: "oauth" }, "OAuth bearer token")),
    project_key: h("input", { id: "connector-project", maxlength: "32", placeholder: "Jira project key, e.g. HELP" }),
    issue_type: h("input", { id: "connector-issue-type", maxlength: "64", value: "Task" }),
    ca_pem: h("textarea", { id: "connector-ca", rows: "3", placeholder: "PEM of a private CA (optional)" }),
    secret: h("input", { id: "connector-secret", type: "password", autocomplete: "new-password", maxlength: "4096" }),
    enabled: h("input", { id: "connector-enabled", type: "checkbox", checked: true }),
  };
  let editing = null;
  const title = h("h2", {});
  const el = h("form", { class: "card", id: "connector-form", hidden: true, onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { name: inputs.name.value, kind: inputs.kind.value, url: inputs.url.value,
      username: inputs.username.value, auth: inputs.auth.value, project_key: inputs.project_key.value,
      issue_type: inputs.issue_type.value, ca_pem: inputs.ca_pem.value, enabled: inputs.enabled.checked };
    if (inputs.secret.value) body.secret = inputs.secret.value;
    try {
      if (editing) await api.put(`/api/v1/tickets/connectors/${encodeURIComponent(editing.id)}`, body);
      else await api.post("/api/v1/tickets/connectors", body);
      inputs.secret.value = "";
      toast(editing ? "Connector saved." : "Connector added.");
      rerender();
    } catch (err) { toast(err.message, "error"); }
  } }, h("div", { class: "form-grid" }, title,
    field("Name", inputs.name), field("Kind", inputs.kind), field("URL (https)", inputs.url),
    field("User name / Jira e-mail", inputs.username), field("ServiceNow auth", inputs.auth),
    field("Jira project key", inputs.project_key), field("Jira issue type", inputs.issue_type),
    field("Password, API token or HMAC key (blank keeps the stored one)", inputs.secret),
    field("Trusted CA (PEM)", inputs.ca_pem), field("Enabled", inputs.enabled),
    h("div", { class: "inline" }, h("button", { type: "submit", class: "primary", id: "connector-save" }, "Save"),
      h("button", { type: "button", onclick: () => { el.hidden = true; } }, "Cancel"))));
  const open = (c) => {
    editing = c;
    title.textContent = c ? `Edit ${c.name}` : "New connector";
    for (const k of ["name", "url", "username", "project_key", "ca_pem"]) inputs[k].value = c ? c[k] || "" : "";
    inputs.kind.value = c ? c.kind : "servicenow";
    inputs.kind.disabled = Boolean(c);
    inputs.auth.value = c ? c.auth || "basic" : "basic";
    inputs.issue_type.value = c ? c.issue_type || "Task" : "Task";
    inputs.enabled.checked = c ? c.enabled : true;
    inputs.secret.value = "";
    inputs.secret.placeholder = c && c.secret === "set" ? "set (leave blank to keep)" : "";
    el.hidden = false;
    inputs.name.focus();
  };
  return { el, open };
}

/** Look up a session or request: its tickets and write-backs; link it to a ticket; create one from a request. */
function linkPanel(connectors) {
  const enabled = connectors.filter((c) => c.enabled);
  const what = h("select", { id: "link-what" }, h("option", { value: "sessions" }, "Session"),
    h("option", { value: "requests" }, "Request"));
  const id = h("input", { id: "link-id", required: true, maxlength: "200", placeholder: "session or request id" });
  const connector = h("select", { id: "link-connector" }, enabled.map((c) => h("option", { value: c.id }, `${c.name} (${c.kind})`)));
  const key = h("input", { id: "link-key", maxlength: "64", placeholder: "INC0010023, HELP-12 …" });
  const out = h("div", { id: "link-result" });
  const base = () => `/api/v1/${what.value}/${encodeURIComponent(id.value.trim())}/tickets`;
  const run = async (fn) => {
    try { renderTickets(clear(out), await fn()); } catch (err) { toast(err.message, "error"); }
  };
  return h("section", { class: "card", id: "ticket-links" }, h("h2", {}, "Link to a ticket"),
    h("div", { class: "form-grid" }, field("For a", what), field("Id", id), field("Connector", connector),
      field("Ticket key", key),
      h("div", { class: "inline" },
        h("button", { type: "button", id: "link-show", onclick: () => run(() => api.get(base())) }, "Show"),
        h("button", { type: "button", id: "link-add", class: "primary",
          onclick: () => run(() => api.post(base(), { connector_id: connector.value, key: key.value.trim() })) }, "Link"),
        h("button", { type: "button", id: "link-create", title: "Open a ticket for the request in the connector's system",
          onclick: () => run(() => api.post(`${base()}/new`, { connector_id: connector.value })) }, "Create ticket"))),
    out);
}

/** A card with the tickets of ``path`` (…/sessions/{id}/tickets or …/requests/{id}/tickets) and the write-back
 *  status of each, for the session and request views; ``view`` given: shown at once, else fetched (Refresh refetches). */
export function ticketStatus(path, id, view = null) {
  const out = h("div", { class: "ticket-status-body" });
  const load = async () => {
    try { renderTickets(clear(out), await api.get(path)); } catch (err) { clear(out).append(unavailable("Tickets", err)); }
  };
  if (view) renderTickets(out, view); else load();
  return h("section", { class: "card ticket-status", id },
    h("div", { class: "page-head" }, h("h3", {}, "Tickets"),
      h("button", { type: "button", class: "link ticket-refresh", onclick: load }, "Refresh")), out);
}

function renderTickets(out, view) {
  if (view.writeback_failed) {
    out.append(h("div", { class: "notice notice-error", role: "alert", id: "writeback-failed" },
      `Write-back failed: ${view.writeback_errors.join("; ")}`));
  }
  if (!view.tickets.length) { out.append(h("p", { class: "muted" }, "No tickets linked.")); return; }
  out.append(h("table", { class: "grid", id: "linked-tickets" },
    h("thead", {}, h("tr", {}, ["Ticket", "Connector", "Linked", "Write-backs"].map((c) => h("th", {}, c)))),
    h("tbody", {}, view.tickets.map((t) => h("tr", { dataset: { id: t.id } },
      h("td", {}, t.url && t.url.startsWith("https://")
        ? h("a", { href: t.url, target: "_blank", rel: "noopener noreferrer" }, text(t.key)) : text(t.key)),
      h("td", {}, `${t.connector} (${t.kind})`), h("td", {}, `${fmtTime(t.created_at)} by ${t.created_by}`),
      h("td", {}, t.writebacks.length ? h("ul", { class: "plain" }, t.writebacks.map((w) => h("li", {},
        badge(w.state === "failed" ? "critical" : w.state === "sent" ? "ok" : "info", w.state),
        ` session ${w.session_id.slice(0, 8)}, ${w.attempts} attempt(s)`,
        w.last_error ? h("span", { class: "muted" }, ` — ${w.last_error}`) : null))) : "—"))))));
}

async function writebacks() {
  const body = h("div", { id: "writebacks-body" });
  const state = h("select", { id: "writeback-state", "aria-label": "State", onchange: () => load() },
    ["", "failed", "pending", "sent"].map((s) => h("option", { value: s }, s || "all")));
  const load = async () => {
    let data;
    try { data = await api.get("/api/v1/tickets/writebacks", { state: state.value }); } catch (err) {
      clear(body).append(unavailable("Write-backs", err)); return;
    }
    clear(body).append(data.writebacks.length ? h("table", { class: "grid", id: "writebacks" },
      h("thead", {}, h("tr", {}, ["Ticket", "Session", "State", "Attempts", "Last error", "When", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, data.writebacks.map((w) => h("tr", { dataset: { id: String(w.id), state: w.state } },
        h("td", {}, `${text(w.ticket)} (${text(w.connector)})`), h("td", { class: "mono" }, text(w.session_id)),
        h("td", {}, badge(w.state === "failed" ? "critical" : w.state === "sent" ? "ok" : "info", w.state)),
        h("td", {}, String(w.attempts)), h("td", {}, text(w.last_error)),
        h("td", {}, fmtTime(w.sent_at || w.failed_at || w.next_attempt_at)),
        h("td", {}, w.state === "failed" ? h("button", { type: "button", class: "link retry", onclick: async () => {
          try { await api.post(`/api/v1/tickets/writebacks/${w.id}/retry`); toast("Queued again."); load(); }
          catch (err) { toast(err.message, "error"); }
        } }, "Retry") : "")))))
      : h("p", { class: "muted" }, "No write-backs."));
  };
  await load();
  return h("section", { class: "card", id: "writeback-list" }, h("h2", {}, "Write-backs"),
    h("div", { class: "toolbar" }, state), body);
}

function rerender() { window.dispatchEvent(new HashChangeEvent("hashchange")); }
