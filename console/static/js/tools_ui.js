// The device page's Processes and Services tabs (issue 16): lists from the device through the server,
// changes only within the technician's own running control session (the device checks that again).
// Everything the device reports is rendered as text.
import * as api from "./api.js";
import { badge, errorBox, fmtBytes, fmtTime, h, text, toast } from "./dom.js";
import { can, session } from "./state.js";

const POLL_MS = 3000;

/** The caller's streaming control session on the device, or null (changes need one). */
async function myControlSession(device) {
  const me = (session.me && session.me.user && session.me.user.username) || "";
  const data = await api.get(`/api/v1/devices/${encodeURIComponent(device.id)}/sessions`);
  const live = (data.sessions || data.items || []).find((x) => x.state === "streaming" && x.mode === "control"
    && x.technician === me);
  return live ? live.session_id : null;
}

/** A button that asks "Confirm?" on the first click and runs `action` on the second. */
function confirmButton(label, attrs, action) {
  let armed = false;
  const button = h("button", { type: "button", ...attrs, onclick: async () => {
    if (!armed) { armed = true; button.textContent = `Confirm ${label.toLowerCase()}`; return; }
    button.disabled = true;
    try { await action(); } finally { armed = false; button.disabled = false; button.textContent = label; }
  } }, label);
  return button;
}

async function change(device, path, body, done) {
  const sid = await myControlSession(device).catch(() => null);
  if (!sid) {
    toast("Open a control session first: the device's user (or a grant) must allow control.", "error");
    return;
  }
  try {
    const r = await api.post(`/api/v1/devices/${encodeURIComponent(device.id)}${path}`, { ...body, session_id: sid });
    toast(r.outcome || "done");
    done();
  } catch (err) { toast(`${err.message}`, "error"); }
}

/** Poll `load` every POLL_MS while `el` is on the page (leaving the tab or the page stops it). */
function poll(el, load) {
  const tick = async () => {
    if (!el.isConnected) return;
    await load();
    setTimeout(tick, POLL_MS);
  };
  return tick;
}

const COLUMNS = [["pid", "PID"], ["name", "Name"], ["user", "User"], ["cpu_percent", "CPU %"],
  ["memory_rss", "Memory"], ["cmdline", "Command line"]];

export async function processesTab(el, device) {
  const mayEnd = can("remote_control", device.group);
  let sort = ["cpu_percent", -1];
  let rows = [];
  const filter = h("input", { type: "search", id: "process-filter", placeholder: "Filter by name, user or command",
    "aria-label": "Filter processes", oninput: () => render() });
  const status = h("p", { class: "muted", id: "processes-status" }, "Loading…");
  const body = h("tbody", { id: "process-rows" });
  const head = h("tr", {}, COLUMNS.map(([key, label]) => h("th", { dataset: { sort: key }, class: "sortable",
    onclick: () => { sort = [key, sort[0] === key ? -sort[1] : (key === "name" || key === "user" ? 1 : -1)]; render(); } },
  label)), mayEnd ? h("th", {}, "") : null);
  el.append(h("section", { class: "card" }, h("h2", {}, "Processes"),
    h("div", { class: "actions" }, filter, status),
    h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "processes" }, h("thead", {}, head), body))));
  function render() {
    const q = filter.value.trim().toLowerCase();
    const [key, dir] = sort;
    const shown = rows.filter((p) => !q || `${p.name} ${p.user} ${p.cmdline}`.toLowerCase().includes(q))
      .sort((a, b) => (a[key] < b[key] ? -dir : a[key] > b[key] ? dir : a.pid - b.pid));
    body.replaceChildren(...shown.map((p) => h("tr", { dataset: { pid: String(p.pid) } },
      h("td", { class: "mono" }, String(p.pid)), h("td", {}, text(p.name)), h("td", {}, text(p.user)),
      h("td", { class: "num" }, p.cpu_percent.toFixed(1)), h("td", { class: "num" }, fmtBytes(p.memory_rss)),
      h("td", { class: "mono cmdline", title: p.cmdline }, text(p.cmdline)),
      mayEnd ? h("td", {}, confirmButton("End", { class: "small danger end-process" }, () => change(device,
        `/processes/${p.pid}/end`, { started_at: p.started_at }, () => load()))) : null)));
  }
  async function load() {
    try {
      const data = await api.get(`/api/v1/devices/${encodeURIComponent(device.id)}/processes`);
      rows = data.processes || [];
      status.replaceChildren(`${rows.length} processes${data.truncated ? " (cut at the limit)" : ""}, `
        + `updated ${fmtTime(Date.now() / 1000)}`);
      render();
    } catch (err) { status.replaceChildren(errorBox(err)); }
  }
  await load();
  setTimeout(poll(el, load), POLL_MS);
}

export async function servicesTab(el, device) {
  const mayAct = can("remote_control", device.group);
  const box = h("section", { class: "card" }, h("h2", {}, "Services"));
  const journal = h("section", { class: "card", id: "service-journal", hidden: true });
  el.append(box, journal);
  let data;
  try {
    data = await api.get(`/api/v1/devices/${encodeURIComponent(device.id)}/services`);
  } catch (err) {
    box.append(err.code === "unavailable" ? h("p", { class: "muted", id: "services-unavailable" }, text(err.message))
      : errorBox(err));
    return;
  }
  const showJournal = async (unit) => {
    journal.hidden = false;
    journal.replaceChildren(h("h2", {}, `Journal: ${unit}`), h("p", { class: "muted" }, "Loading…"));
    try {
      const j = await api.get(`/api/v1/devices/${encodeURIComponent(device.id)}/services/${encodeURIComponent(unit)}/journal`,
        { lines: 100 });
      journal.replaceChildren(h("h2", {}, `Journal: ${unit}`), h("pre", { class: "out journal" },
        (j.journal || []).map((l) => `${fmtTime(l.ts)} [${l.priority}] ${l.message}\n`).join("")));
    } catch (err) { journal.replaceChildren(h("h2", {}, `Journal: ${unit}`), errorBox(err)); }
  };
  const units = data.services || [];
  box.append(h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "services" },
    h("thead", {}, h("tr", {}, ["Unit", "Load", "Active", "State", "Description", ""].map((c) => h("th", {}, c)))),
    h("tbody", {}, units.map((u) => h("tr", { dataset: { unit: u.unit } },
      h("td", { class: "mono" }, text(u.unit)), h("td", {}, text(u.load)), h("td", {}, badge(u.active)),
      h("td", {}, text(u.sub)), h("td", {}, text(u.description)),
      h("td", {}, h("button", { type: "button", onclick: () => showJournal(u.unit) }, "Journal"),
        mayAct ? ["start", "stop", "restart"].map((a) => confirmButton(a[0].toUpperCase() + a.slice(1),
          { class: a === "stop" ? "danger" : "" }, () => change(device,
            `/services/${encodeURIComponent(u.unit)}/actions`, { action: a }, () => {}))) : null)))))));
}
