// Device page: identity, OS, hardware, disks, network, software, changes, health, alerts, sessions
// (with recordings and the technician's notes), signed documents naming it, tasks.
import * as api from "../api.js";
import { lineChart } from "../charts.js";
import { ago, badge, clear, errorBox, fmtTime, h, renderValue, text, toast, unavailable } from "../dom.js";
import { can, session } from "../state.js";
import { duration, newTaskForm, runsTable } from "../tasks_ui.js";
import { proofPanels } from "../prove_ui.js";
import { impactPanel, severityBadge } from "../cmdb_ui.js";
import { chatCell } from "../toolkit.js";
import { processesTab, servicesTab } from "../tools_ui.js";

const TABS = [
  ["overview", "Overview"], ["hardware", "Hardware"], ["software", "Software"], ["changes", "Changes"],
  ["health", "Health"], ["alerts", "Alerts"], ["relations", "Relations", "Relations & impact"],
  ["vulns", "Vulnerabilities"], ["remote", "Sessions", "Sessions & documents"], ["tasks", "Tasks"],
  ["processes", "Processes"], ["services", "Services"],
];  // [key, label, title]: the twelve fit one row of a 1360-pixel screen beside the menu

/** Who agreed to a session, in words (session.answer `by`). */
function consentBy(x) {
  const by = x.answered_by;
  if (!by) return x.state === "offered" ? "waiting for an answer" : "—";
  const accepted = ["consented", "streaming", "ended"].includes(x.state) && x.started_at;
  const who = { user: "device user", grant: `grant ${x.document_id || ""}`.trim(), policy: "device policy",
    timeout: "nobody (no answer)", unavailable: "nobody (no display)" }[by] || by;
  return accepted ? who : `${who} — declined`;
}
/** A session's notes, collapsed to their first line (text nodes only: notes are never markup). */
function notesCell(x) {
  const me = session.me || {};
  const mine = (me.user && me.user.username === x.technician) || me.is_admin;
  const edit = mine ? h("a", { href: `#/sessions/${encodeURIComponent(x.session_id)}`, class: "edit-notes" },
    x.notes && x.notes.text ? "Edit" : "Add notes") : null;
  if (!x.notes || !x.notes.text) return edit || h("span", { class: "muted" }, "—");
  const first = x.notes.text.split("\n", 1)[0];
  const summary = first.length > 60 || first.length < x.notes.text.length ? `${first.slice(0, 60)}…` : first;
  return h("div", {}, h("details", { class: "output notes" }, h("summary", {}, summary),
    h("pre", { class: "out notes-text" }, x.notes.text),
    h("div", { class: "muted notes-by" }, `— ${x.notes.author}, ${fmtTime(x.notes.updated_at)}`)), edit);
}

let device = null;
/** Why Control is disabled on a view-only device (the server's 409 device_view_only says the same). */
const VIEW_ONLY_REASON = "View only: this device's desktop offers no remote input (its screen-sharing portal has no "
  + "RemoteDesktop, as on sway and other wlroots desktops)";
let inventory = null;
let panel = null;
let tabButtons = {};

export async function show(main, id, tab) {
  device = null;
  inventory = null;
  let dev;
  try {
    dev = await api.get(`/api/v1/devices/${encodeURIComponent(id)}`);
  } catch (err) {
    main.append(h("p", {}, h("a", { href: "#/devices" }, "← Devices")), err.status === 404 && err.code === "not_found"
      && err.message !== "not available" ? errorBox(err) : unavailable("Device details", err));
    return;
  }
  device = dev.device || dev;
  const actions = h("div", { class: "actions", id: "device-actions" });
  if (can("remote_view", device.group)) {
    actions.append(h("button", { type: "button", class: "primary", id: "start-view", onclick: () => start("view") },
      "View screen"));
  }
  if (can("remote_control", device.group)) {
    // A view-only device (a wlroots desktop: its portal has no RemoteDesktop) would refuse control with 409.
    actions.append(h("button", { type: "button", class: "danger", id: "start-control", onclick: () => start("control"),
      disabled: device.screen_view_only === true, title: device.screen_view_only === true ? VIEW_ONLY_REASON : null },
      "Control"));
  }
  if (!actions.childElementCount) actions.append(h("span", { class: "muted" }, "You may not open remote sessions here."));
  const tabs = h("div", { class: "tabs", role: "tablist" });
  tabButtons = {};
  for (const [key, label, title] of TABS) {
    tabButtons[key] = h("button", { type: "button", role: "tab", id: `tab-${key}`, title: title || undefined,
      onclick: () => openTab(key) }, label);
    tabs.append(tabButtons[key]);
  }
  panel = h("div", { class: "tab-panel", role: "tabpanel", id: "device-panel" });
  main.append(h("section", { class: "page" },
    h("p", { class: "crumbs" }, h("a", { href: "#/devices" }, "← Devices")),
    h("div", { class: "page-head" },
      h("h1", { class: "hostname", id: "device-hostname" }, text(device.hostname || device.id)),
      badge(device.status || "unknown"), actions),
    h("dl", { class: "summary" },
      h("dt", {}, "Device id"), h("dd", { class: "mono", title: device.id }, text(device.id)),
      h("dt", {}, "Group"), h("dd", {}, text(device.group)),
      h("dt", {}, "OS"), h("dd", {}, text(device.os)),
      h("dt", {}, "IP"), h("dd", { class: "mono" }, text(device.ip)),
      h("dt", {}, "Last seen"), h("dd", {}, ago(device.last_seen)),
      h("dt", {}, "Screen"), h("dd", { id: "screen-backend" }, h("span", { class: "mono" }, text(device.screen_backend || "—")),
        device.screen_view_only === true ? h("span", { class: "muted", id: "screen-view-only", title: VIEW_ONLY_REASON },
          " view only") : null),
      h("dt", {}, "Primary user"), primaryUser(device.id)),
    h("div", { class: "reason-form", id: "reason-form", hidden: true }),
    tabs, panel));
  await openTab(TABS.some(([k]) => k === tab) ? tab : "overview");
}

/** The user with the most logins on the device (from its login history), filled in when it answers. */
function primaryUser(id) {
  const dd = h("dd", { id: "primary-user" }, "…");
  api.get(`/api/v1/devices/${encodeURIComponent(id)}/primary-user`).then((r) => {
    dd.replaceChildren(r.primary_user ? `${r.primary_user} (${r.logins} login${r.logins === 1 ? "" : "s"})` : "—");
  }).catch(() => dd.replaceChildren("—"));
  return dd;
}

async function getInventory() {
  if (inventory === null) inventory = await api.get(`/api/v1/devices/${encodeURIComponent(device.id)}/inventory`);
  return inventory;
}

async function openTab(key) {
  for (const [k, b] of Object.entries(tabButtons)) b.setAttribute("aria-selected", String(k === key));
  clear(panel).append(h("p", { class: "muted" }, "Loading…"));
  const content = h("div");
  try {
    await RENDER[key](content);
  } catch (err) {
    content.replaceChildren(unavailable(TABS.find(([k]) => k === key)[1], err));
  }
  clear(panel).append(content);
}

function sections(el, names) {
  return getInventory().then((inv) => {
    const s = inv.sections || {};
    el.append(h("p", { class: "muted" }, `Inventory updated ${fmtTime(inv.updated_at)}`));
    for (const [name, label] of names) {
      el.append(h("section", { class: "card", id: `inv-${name}` }, h("h2", {}, label),
        s[name] === undefined ? h("p", { class: "muted" }, "not reported") : renderValue(s[name])));
    }
  });
}

const RENDER = {
  processes: (el) => processesTab(el, device),
  services: (el) => servicesTab(el, device),
  overview: (el) => sections(el, [["identity", "Identity"], ["os", "Operating system"], ["users", "Users"],
    ["security", "Security"]]),
  hardware: (el) => sections(el, [["cpu", "CPU"], ["memory", "Memory"], ["disks", "Disks"], ["network", "Network"],
    ["battery", "Battery"], ["displays", "Displays"]]),
  software: async (el) => {
    const list = h("div", { id: "software-list" });
    let timer = 0;
    const load = async (q) => {
      try {
        const data = await api.get(`/api/v1/devices/${encodeURIComponent(device.id)}/software`, { q });
        const items = data.items || data.software || [];
        list.replaceChildren(h("p", { class: "muted" }, `${data.total ?? items.length} package(s)`), renderValue(items));
      } catch (err) {
        list.replaceChildren(unavailable("Software", err));
      }
    };
    el.append(h("input", { type: "search", placeholder: "Search software…", "data-search": "1", id: "software-search",
      "aria-label": "Search software", oninput: (ev) => { clearTimeout(timer); timer = setTimeout(() => load(ev.target.value), 200); } }), list);
    await load("");
  },
  changes: async (el) => {
    const data = await api.get(`/api/v1/devices/${encodeURIComponent(device.id)}/changes`);
    el.append(renderValue(data.items || data.changes || []));
  },
  health: async (el) => {
    const to = Date.now() / 1000;
    const from = to - 6 * 3600;
    const data = await api.get(`/api/v1/devices/${encodeURIComponent(device.id)}/health`, { from, to, step: 60 });
    const points = data.points || data.series || data.items || (Array.isArray(data) ? data : []);
    if (!points.length) { el.append(h("p", { class: "muted" }, "No health samples in the last 6 hours.")); return; }
    const xs = points.map((p) => p.ts);
    const pick = (k) => points.map((p) => (typeof p[k] === "number" ? p[k] : null));
    const groups = {};
    for (const k of Object.keys(points[0])) {
      if (k === "ts" || k === "samples") continue;
      const prefix = k.split("_")[0];
      (groups[prefix] = groups[prefix] || []).push(k);
    }
    const titles = { cpu: ["CPU", "%"], mem: ["Memory", "%"], disk: ["Disk free (lowest)", "%"] };
    const grid = h("div", { class: "charts" });
    el.append(h("p", { class: "muted" }, "Last 6 hours, 1-minute steps"), grid);
    for (const [prefix, keys] of Object.entries(groups)) {
      const [title, unit] = titles[prefix] || [prefix, ""];
      // The six hours on the time axis however few samples there are; shares from 0 to 100.
      const shares = unit === "%" ? { yMin: 0, yMax: 100 } : {};
      grid.append(await lineChart(title, xs, keys.map((k) => [k.replaceAll("_", " "), pick(k)]),
        { unit, xRange: [from, to], ...shares }));
    }
  },
  alerts: async (el) => {
    const data = await api.get("/api/v1/alerts", { device_id: device.id, device: device.id });
    const items = (data.items || data.alerts || []).filter((a) => !a.device_id || a.device_id === device.id);
    el.append(items.length ? h("table", { class: "grid" },
      h("thead", {}, h("tr", {}, ["Severity", "Rule", "Status", "Message", "Opened"].map((c) => h("th", {}, c)))),
      h("tbody", {}, items.map((a) => h("tr", {}, h("td", {}, badge(a.severity || "info")), h("td", {}, text(a.rule)),
        h("td", {}, badge(a.status || "open")), h("td", {}, text(a.message)), h("td", {}, fmtTime(a.opened_at))))))
      : h("p", { class: "muted" }, "No alerts."));
  },
  relations: async (el) => {
    const rel = await api.get(`/api/v1/devices/${encodeURIComponent(device.id)}/relations`);
    el.append(h("section", { class: "card", id: "device-logins" }, h("h2", {}, "Users (login history)"),
      rel.logins.length ? renderValue(rel.logins) : h("p", { class: "muted" }, "No logins recorded.")),
    h("section", { class: "card", id: "device-networks" }, h("h2", {}, "Networks"),
      rel.networks.length ? renderValue(rel.networks) : h("p", { class: "muted" }, "No routable networks.")),
    h("p", { class: "muted" }, `${rel.software_installed} installed package(s) — see Software.`));
    el.append(await impactPanel(`/api/v1/devices/${encodeURIComponent(device.id)}/impact`,
      { type: "device", id: device.id, name: device.hostname }));
  },
  vulns: async (el) => {
    const data = await api.get(`/api/v1/devices/${encodeURIComponent(device.id)}/vulnerabilities`);
    const items = data.items || [];
    el.append(items.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "device-vulns" },
      h("thead", {}, h("tr", {}, ["Advisory", "Also known as", "Severity", "Package", "Installed", "Fixed in", "Summary"]
        .map((c) => h("th", {}, c)))),
      h("tbody", {}, items.map((v) => h("tr", { dataset: { id: v.id } },
        h("td", {}, h("a", { href: `#/vulnerabilities/${encodeURIComponent(v.id)}` }, text(v.id))),
        h("td", {}, text((v.aliases || []).join(", "))), h("td", {}, severityBadge(v.severity)),
        h("td", {}, text(v.package)), h("td", { class: "mono" }, text(v.version)),
        h("td", { class: "mono" }, v.fixed ? text(v.fixed) : "not fixed yet"), h("td", {}, text(v.summary)))))))
      : h("p", { class: "muted", id: "device-vulns-none" }, "No known vulnerability matches this device's packages."));
  },
  remote: async (el) => {
    const sessionsBox = h("section", { class: "card" }, h("h2", {}, "Remote sessions"));
    const grantsBox = h("section", { class: "card" }, h("h2", {}, "Signed documents (unattended access, tasks)"));
    el.append(sessionsBox, grantsBox);
    try {
      const data = await api.get(`/api/v1/devices/${encodeURIComponent(device.id)}/sessions`);
      const items = data.sessions || data.items || [];
      sessionsBox.append(items.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid sessions" },
        h("thead", {}, h("tr", {}, ["Asked", "By", "Asked for", "Consent by", "Mode", "State", "Duration", "Reason", "End", "Recording",
          "Notes", "Chat"]
          .map((c) => h("th", {}, c)))),
        h("tbody", {}, items.map((x) => h("tr", { dataset: { session: x.session_id } },
          h("td", {}, h("a", { href: `#/sessions/${encodeURIComponent(x.session_id)}` }, fmtTime(x.created_at))),
          h("td", {}, text(x.technician)), h("td", {}, badge(x.requested_mode || "view")),
          h("td", { class: "consent-by" }, consentBy(x)),
          h("td", {}, x.mode && x.started_at ? badge(x.mode) : "—"),
          h("td", {}, badge(x.state)),
          h("td", {}, x.started_at ? (x.ended_at ? duration(x.started_at, x.ended_at) : "running") : "—"),
          h("td", {}, text(x.reason)),
          h("td", { class: "end-reason" }, x.end_reason ? `${x.end_reason}${x.ended_by ? ` (by ${x.ended_by})` : ""}` : "—"),
          h("td", {}, x.recording && mayReplay(x, device.group) ? h("a", { href: `#/recordings/${encodeURIComponent(x.session_id)}`,
            class: "play-recording" }, "▶ Play") : h("span", { class: "muted" }, x.recording ? "recorded" : "—")),
          h("td", { class: "session-notes" }, notesCell(x)),
          h("td", { class: "session-chat" }, x.started_at ? chatCell(x.session_id) : "—"))))))
        : h("p", { class: "muted" }, "No sessions yet."));
      const proofs = await proofPanels(items, () => openTab("remote"));  // unattended: the device's challenge
      if (proofs) sessionsBox.append(proofs);
    } catch (err) { sessionsBox.append(unavailable("Session history", err)); }
    try {  // the server's view; the device decides, against the root it was installed with
      const data = await api.get("/api/v1/documents");
      const mine = (data.documents || []).filter((d) => (d.devices || []).includes(device.id)
        || (d.groups || []).includes(device.group));
      grantsBox.append(mine.length ? renderValue(mine.map((d) => ({ document_id: d.document_id, kind: d.kind,
        status: d.status, actions: (d.body.actions || [d.body.action]).join(", "),
        technicians: (d.body.technician_names || []).join(", "), not_after: d.body.not_after,
        reason: d.body.reason || "" }))) : h("p", { class: "muted" }, "No signed document names this device."));
    } catch (err) { grantsBox.append(unavailable("Signed documents", err)); }
  },
};

/** Grants the device holds that allow `mode` now (the server's list; the device checks again). */
async function usableGrants(mode) {
  try {
    const data = await api.get(`/api/v1/devices/${encodeURIComponent(device.id)}/grants`);
    const now = Date.now() / 1000;
    return (data.grants || []).filter((g) => g.held_by_device && g.actions.includes(mode) && g.not_before <= now);
  } catch { return []; }
}

/** "How": ask the user (attended), or unattended under one of the device's grants (then the passkey proof). */
function grantPicker(grants) {
  const select = h("select", { id: "session-grant", "aria-label": "How" },
    h("option", { value: "" }, "Ask the user (attended)"),
    grants.map((g) => h("option", { value: g.document_id },
      `Unattended — grant ${g.document_id}, until ${fmtTime(g.not_after)}${g.windows ? " (time windows)" : ""}`)));
  if (!grants.length) select.disabled = true;
  return select;
}

async function start(mode) {
  const form = document.getElementById("reason-form");
  const grants = await usableGrants(mode);
  const reason = h("input", { id: "session-reason", required: true, maxlength: "200",
    placeholder: "Why? e.g. ticket #1234, printer setup", "aria-label": "Reason" });
  const how = grantPicker(grants);
  const submit = h("button", { type: "submit", class: mode === "control" ? "danger" : "primary", id: "session-confirm" },
    "Ask the user");
  const hint = h("span", { class: "muted", id: "session-grant-hint" }, grants.length ? ""
    : "No grant this device holds allows unattended access now.");
  how.addEventListener("change", () => {
    submit.textContent = how.value ? "Start unattended" : "Ask the user";
    hint.textContent = how.value ? "You will prove who you are with your passkey; the device checks the grant." : "";
  });
  form.replaceChildren(h("form", { class: "inline", onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { mode, reason: reason.value };
    if (how.value) body.document_id = how.value;
    try {
      const res = await api.post(`/api/v1/devices/${encodeURIComponent(device.id)}/sessions`, body);
      location.hash = `#/sessions/${encodeURIComponent(res.session_id)}`;
    } catch (err) {
      toast(err.status === 404 ? "Remote sessions are not available on this server yet." : err.message, "error");
    }
  } }, h("label", { for: "session-reason" }, mode === "control" ? "Ask to control the screen — reason:" : "Ask to view the screen — reason:"),
  reason, how, submit, h("button", { type: "button", onclick: () => { form.hidden = true; } }, "Cancel"), hint));
  form.hidden = false;
  reason.focus();
}

RENDER.tasks = async (el) => {
  if (!can("run_tasks", device.group)) {
    el.append(h("p", { class: "muted", id: "no-task-rights" }, "You may not see or run tasks on this device's group."));
    return;
  }
  const list = h("div", { id: "device-task-runs" });
  const reload = async () => {
    const data = await api.get(`/api/v1/devices/${encodeURIComponent(device.id)}/tasks`);
    list.replaceChildren(runsTable(data.runs || [], { device: false, task: true,
      onChange: () => reload().catch((err) => toast(err.message, "error")) }));
  };
  const form = newTaskForm({ device: { id: device.id, group: device.group }, onCreated: () => reload().catch((err) => toast(err.message, "error")) });
  el.append(h("div", { class: "toolbar" },
    h("button", { type: "button", class: "primary", id: "new-task", onclick: () => { form.hidden = !form.hidden; } }, "New task"),
    h("button", { type: "button", id: "refresh-tasks", onclick: () => reload().catch((err) => toast(err.message, "error")) }, "Refresh"),
    h("a", { href: "#/tasks" }, "All tasks →")), form, h("section", { class: "card" }, h("h2", {}, "Task runs on this device"), list));
  await reload();
};

export function leave() { panel = null; }

/** Recordings replay the user's screen: the session's own technician and auditors (view_recordings) only. */
function mayReplay(x, group) {
  return can("view_recordings", group) || Boolean(session.me && session.me.user && x.technician === session.me.user.username);
}
