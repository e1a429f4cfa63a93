// The support queue (issue 18): open requests by group, urgency and age, live from the server's websocket.
// Everything in a request comes from a device (summary, details, diagnostics, names): text nodes only.
import * as api from "../api.js";
import { ago, badge, clear, errorBox, fmtTime, h, text, toast } from "../dom.js";
import { can } from "../state.js";
import { ticketStatus } from "./tickets.js";

const URGENCY = { critical: 0, high: 1, normal: 2, low: 3 };
const REOPEN_WINDOW_S = 7 * 86400;

let ctx = null;  // { ws, requests: Map, resolved: Map, selected, body, detail, timer, closed }

export async function show(main) {
  const body = h("div", { id: "queue-body", "aria-live": "polite" });
  const detail = h("aside", { id: "queue-detail", class: "queue-detail", hidden: true });
  const live = h("span", { id: "queue-live", class: "badge state-offline" }, "connecting");
  main.append(h("section", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, "Queue"), live),
    h("div", { class: "queue-layout" }, body, detail)));
  ctx = { ws: null, requests: new Map(), resolved: new Map(), selected: null, body, detail, live, timer: 0,
    closed: false };
  ctx.timer = setInterval(() => render(), 15000);  // ages move on
  await loadResolved();
  connect();
}

export function leave() {
  if (!ctx) return;
  ctx.closed = true;
  clearInterval(ctx.timer);
  if (ctx.ws) ctx.ws.close();
  ctx = null;
}

async function loadResolved() {
  try {
    const since = Date.now() / 1000 - REOPEN_WINDOW_S;
    const data = await api.get("/api/v1/requests", { state: "resolved", resolved_since: String(Math.floor(since)) });
    for (const r of data.requests) if (r.resolved_at && r.resolved_at > since) ctx.resolved.set(r.id, r);
  } catch (err) {
    toast(err.message, "error");
  }
}

function connect() {
  const mine = ctx;
  const ws = new WebSocket(`wss://${location.host}/api/v1/requests/live`);
  mine.ws = ws;
  ws.onopen = () => { mine.live.textContent = "live"; mine.live.className = "badge state-online"; };
  ws.onmessage = (ev) => {
    if (ctx !== mine) return;
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    if (msg.type === "snapshot") {
      mine.requests = new Map(msg.requests.map((r) => [r.id, r]));
    } else if (msg.type === "update") {
      place(msg.request);
    } else if (msg.type === "removed") {  // escalated to a group this page does not see
      mine.requests.delete(msg.id);
      mine.resolved.delete(msg.id);
    }
    render();
  };
  ws.onclose = () => {
    if (ctx !== mine || mine.closed) return;
    mine.live.textContent = "reconnecting";
    mine.live.className = "badge state-offline";
    setTimeout(() => { if (ctx === mine && !mine.closed) connect(); }, 2000);
  };
}

/** Put a request where its state says: the open queue, the recently resolved list, or nowhere. */
function place(r) {
  ctx.requests.delete(r.id);
  ctx.resolved.delete(r.id);
  if (r.state === "waiting" || r.state === "claimed") ctx.requests.set(r.id, r);
  else if (r.state === "resolved") ctx.resolved.set(r.id, r);
  if (ctx.selected && ctx.selected.id === r.id) {
    ctx.selected = r;
    renderDetail();
  }
}

function byUrgencyThenAge(a, b) {
  return (URGENCY[a.urgency] ?? 9) - (URGENCY[b.urgency] ?? 9) || a.created_at - b.created_at;
}

function render() {
  if (!ctx) return;
  const body = clear(ctx.body);
  const open = [...ctx.requests.values()];
  if (!open.length) body.append(h("p", { class: "muted", id: "queue-empty" }, "No open requests."));
  const groups = [...new Set(open.map((r) => r.group_name))].sort();
  for (const group of groups) {
    const rows = open.filter((r) => r.group_name === group).sort(byUrgencyThenAge);
    body.append(h("section", { class: "queue-group", dataset: { group } },
      h("h2", {}, text(group), " ", h("span", { class: "muted" }, `${rows.length} open`)),
      table(rows, false)));
  }
  const resolved = [...ctx.resolved.values()].sort((a, b) => b.resolved_at - a.resolved_at);
  if (resolved.length) {
    body.append(h("section", { class: "queue-group queue-resolved" },
      h("h2", {}, "Resolved in the last 7 days"), table(resolved, true)));
  }
}

function table(rows, resolved) {
  return h("div", { class: "table-wrap" }, h("table", { class: "grid queue-table" },
    h("thead", {}, h("tr", {}, ["#", "Urgency", "Request", "From", resolved ? "Resolved" : "Waiting",
      "State", ""].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {
      class: `queue-row${ctx.selected && ctx.selected.id === r.id ? " selected" : ""}`,
      dataset: { requestId: r.id, state: r.state },
    },
    h("td", { class: "num" }, `#${r.number}`),
    h("td", {}, badge(urgencyClass(r.urgency), r.urgency)),
    h("td", { class: "queue-summary" }, h("button", { class: "link queue-open", type: "button", onclick: () => select(r) },
      text(r.summary)),
      r.reopened ? h("span", { class: "badge state-reopened queue-reopened", title: `Reopened ${r.reopened_count}×` },
        "reopened") : null,
      r.escalated ? h("span", { class: "badge state-escalated" }, "escalated") : null,
      r.has_screenshot ? h("span", { class: "muted queue-shot-mark", title: "Screenshot attached" }, "screenshot")
        : null),
    // Who asked, and on which device (its hostname, or its id until it has one: cut, whole in the title).
    h("td", { class: "queue-from" }, h("div", {}, text(r.requester)),
      h("a", { class: "queue-device", href: `#/devices/${encodeURIComponent(r.device_id)}`,
        title: r.hostname ? `${r.hostname} (${r.device_id})` : r.device_id }, text(r.hostname || r.device_id))),
    h("td", { title: fmtTime(resolved ? r.resolved_at : r.created_at) },
      resolved ? ago(r.resolved_at) : ago(r.created_at).replace(" ago", "")),
    h("td", {}, badge(r.state, r.state === "claimed" ? `claimed by ${r.claimed_by_name || r.claimed_by}` : r.state)),
    h("td", { class: "actions" }, actions(r)))))));
}

function urgencyClass(u) {
  return { critical: "critical", high: "warning", normal: "info", low: "unknown" }[u] || "info";
}

function actions(r) {
  const canAct = can("remote_view", r.group_name);
  if (!canAct) return [];
  const out = [];
  if (r.state === "waiting") out.push(button("Claim", "claim", () => act(r, "claim")));
  if (r.state === "claimed") out.push(button("Unclaim", "unclaim", () => act(r, "unclaim")));
  if (r.state === "waiting" || r.state === "claimed") {
    out.push(button("Connect", "connect", () => connectTo(r)));
    out.push(button("Resolve", "resolve", () => { select(r); setTimeout(() => {
      const field = document.getElementById("resolve-category");
      if (field) field.focus();
    }, 0); }));
  }
  if (r.state === "resolved" && Date.now() / 1000 - r.resolved_at < REOPEN_WINDOW_S) {
    out.push(button("Reopen", "reopen", () => act(r, "reopen")));
  }
  return out;
}

function button(label, name, onclick) {
  return h("button", { type: "button", class: `small queue-${name}`, onclick }, label);
}

async function act(r, action, body = {}) {
  try {
    const updated = await api.post(`/api/v1/requests/${encodeURIComponent(r.id)}/${action}`, body);
    if (ctx) { place(updated); render(); }
    return updated;
  } catch (err) {
    toast(err.message, "error");
    return null;
  }
}

async function connectTo(r) {
  const mode = can("remote_control", r.group_name) ? "control" : "view";
  try {
    const res = await api.post(`/api/v1/devices/${encodeURIComponent(r.device_id)}/sessions`,
      { mode, request_id: r.id });
    location.hash = `#/sessions/${encodeURIComponent(res.session_id)}`;
  } catch (err) {
    toast(err.message, "error");
  }
}

async function select(r) {
  ctx.selected = r;
  render();
  await renderDetail();
}

async function renderDetail() {
  if (!ctx || !ctx.selected) return;
  const r = ctx.selected;
  const panel = ctx.detail;
  panel.hidden = false;
  let full;
  try {
    full = await api.get(`/api/v1/requests/${encodeURIComponent(r.id)}`);
  } catch (err) {
    clear(panel).append(errorBox(err));
    return;
  }
  if (!ctx || !ctx.selected || ctx.selected.id !== r.id) return;
  const restore = keepTyped(panel, r.id);
  clear(panel).append(h("div", {},  // h() flattens lists and drops nulls; Element.append would print them
    h("div", { class: "page-head" }, h("h2", { id: "queue-detail-title" }, `#${full.number} `, text(full.summary)),
      h("button", { type: "button", class: "link", onclick: () => { ctx.selected = null; panel.hidden = true; render(); } },
        "Close")),
    h("p", {}, badge(full.state), " ", badge(urgencyClass(full.urgency), full.urgency),
      full.reopened ? h("span", { class: "badge state-reopened" }, `reopened ${full.reopened_count}×`) : null,
      " from ", text(full.requester), " on ", text(full.hostname || full.device_id), ", ", fmtTime(full.created_at)),
    full.details ? h("pre", { class: "queue-details" }, full.details) : null,
    full.has_screenshot && can("remote_view", full.group_name)
      ? h("figure", { class: "queue-shot" }, h("img", {
        id: "queue-screenshot", alt: "Screenshot sent with the request",
        src: `/api/v1/requests/${encodeURIComponent(full.id)}/screenshot`,
      })) : null,
    diagnostics(full.diagnostics || []),
    full.attempt ? h("div", { class: "notice notice-muted", id: "queue-attempt" },
      h("strong", {}, "Self-service tried first: "), text(full.attempt.title), ` — ${full.attempt.outcome}`,
      full.attempt.detail ? h("div", {}, text(full.attempt.detail)) : null) : null,
    survey(full.survey),
    full.tickets ? ticketStatus(`/api/v1/requests/${encodeURIComponent(full.id)}/tickets`, "queue-tickets",
      full.tickets) : null,
    forms(full),
    h("h3", {}, "History"),
    h("ol", { class: "plain queue-events" }, (full.events || []).map((e) => h("li", {},
      h("span", { class: "muted" }, fmtTime(e.at)), " ", h("strong", {}, e.kind), " ", text(e.actor),
      e.detail && e.detail.text ? [": ", String(e.detail.text)] : null,
      e.detail && e.detail.category ? [" (", String(e.detail.category), ")"] : null)))));
  restore();
}

/** What the technician typed into the panel's forms (and where the caret was), put back once the panel is
 * rebuilt: a live update of the same request (a note, the session starting) re-renders the panel, and it wiped
 * a resolution being written — the Resolve that followed then sent nothing (its category was empty again). */
function keepTyped(panel, id) {
  const typed = panel.dataset.requestId === id
    ? [...panel.querySelectorAll("input[id], textarea[id]")].filter((el) => el.value).map((el) => [el.id, el.value])
    : [];
  const active = document.activeElement;
  const focused = active && panel.contains(active) && active.id ? active.id : null;
  const caret = focused && typeof active.selectionStart === "number" ? [active.selectionStart, active.selectionEnd] : null;
  return () => {
    panel.dataset.requestId = id;
    for (const [elId, value] of typed) {
      const el = document.getElementById(elId);
      if (el && panel.contains(el) && !el.value) el.value = value;
    }
    const el = focused ? document.getElementById(focused) : null;
    if (el && panel.contains(el)) {
      el.focus();
      if (caret && typeof el.setSelectionRange === "function") el.setSelectionRange(caret[0], caret[1]);
    }
  };
}

/** The CSAT survey of a resolved request: asked, and the person's score and comment (their words: text only). */
function survey(v) {
  if (!v) return null;
  const answered = v.answered_at !== null && v.answered_at !== undefined;
  return h("div", { id: "queue-survey", class: "notice notice-muted", dataset: { score: answered ? String(v.score) : "" } },
    h("strong", {}, "Survey: "),
    answered ? [`${v.score} of 5`, ` (${fmtTime(v.answered_at)})`] : (v.delivered_at ? "asked, not answered" : "not yet asked"),
    answered && v.comment ? h("blockquote", { id: "queue-survey-comment" }, text(v.comment)) : null);
}

function diagnostics(items) {
  if (!items.length) return null;
  return h("div", { id: "queue-diagnostics" }, h("h3", {}, "Diagnostics"),
    h("ul", { class: "plain" }, items.map((d) => h("li", {}, badge(urgencyClass(
      d.severity === "critical" ? "critical" : d.severity === "warning" ? "high" : "normal"), d.severity), " ",
    text(d.text), " ", h("span", { class: "muted" }, `(${d.code})`)))));
}

function forms(r) {
  if (!can("remote_view", r.group_name)) return null;
  const out = [];
  if (r.state === "waiting" || r.state === "claimed") {
    const category = h("input", { id: "resolve-category", required: true, maxlength: 64, placeholder: "Category",
      list: "queue-categories" });
    const notes = h("textarea", { id: "resolve-notes", maxlength: 4000, rows: 2, placeholder: "What was done" });
    out.push(h("form", { class: "queue-form", id: "queue-resolve", onsubmit: async (ev) => {
      ev.preventDefault();
      if (await act(r, "resolve", { category: category.value.trim(), notes: notes.value })) toast("Resolved", "ok");
    } }, h("h3", {}, "Resolve"), category,
    h("datalist", { id: "queue-categories" }, ["printer", "network", "access", "software", "hardware", "other"]
      .map((c) => h("option", { value: c }))),
    notes, h("button", { type: "submit" }, "Resolve")));
    const note = h("input", { id: "queue-note-text", maxlength: 4000, placeholder: "A note the user sees" });
    out.push(h("form", { class: "queue-form", onsubmit: async (ev) => {
      ev.preventDefault();
      if (note.value.trim() && await act(r, "notes", { text: note.value.trim() })) { note.value = ""; renderDetail(); }
    } }, note, h("button", { type: "submit" }, "Add note")));
  }
  return out;
}
