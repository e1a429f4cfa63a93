// Support codes: one attended session for a machine that is not enrolled (a contractor's laptop).
// Create a code (shown once, to read aloud), hand over the bundle and the command, then connect
// the support client when it appears as waiting. The session opens in the normal viewer.
import * as api from "../api.js";
import { ago, badge, clear, fmtTime, h, text, toast, unavailable } from "../dom.js";
import { can, session } from "../state.js";

let timer = null;

export async function show(main) {
  const group = h("select", { id: "support-group", "aria-label": "Group" });
  const reason = h("input", { id: "support-reason", type: "text", maxlength: 256, placeholder: "Reason (e.g. ticket 42)",
    "aria-label": "Reason" });
  const shown = h("div", { id: "support-code-shown", class: "support-code-shown", hidden: true });
  const lists = h("div", { id: "support-lists" });
  const create = h("button", { id: "support-create", type: "button", class: "primary",
    onclick: () => createCode(group.value, reason.value, shown, lists) }, "Create support code");
  main.append(h("section", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, "Support codes")),
    h("p", { class: "muted" }, "For a machine that is not enrolled: create a code and read it to the person, who runs ",
      h("code", {}, "helpline support --bundle helpline-support.toml CODE"), " with the ",
      h("a", { id: "support-bundle", href: "/api/v1/support-codes/bundle", download: "helpline-support.toml" },
        "support bundle"),
      " (the server's address and its pinned certificate authority). They are asked before you see their screen; "
      + "one session per code, never unattended."),
    h("div", { class: "support-create" }, group, reason, create),
    shown, lists));
  await loadGroups(group);
  await load(lists);
  timer = setInterval(() => load(lists), 2000);
}

export function leave() {
  if (timer) clearInterval(timer);
  timer = null;
}

async function loadGroups(select) {
  let names = Object.keys((session.me && session.me.rights) || {}).filter((g) => g !== "*");
  try {
    const data = await api.get("/api/v1/groups");
    names = [...new Set([...names, ...(data.items || []).map((g) => g.name)])];
  } catch { /* the caller's own groups are enough */ }
  clear(select).append(...names.filter((g) => can("remote_view", g)).sort().map((g) => h("option", { value: g }, g)));
}

async function createCode(group, reason, shown, lists) {
  let body;
  try { body = await api.post("/api/v1/support-codes", { group, reason }); } catch (err) {
    toast(err.message, "error");
    return;
  }
  // Shown once: the server keeps only a hash of it.
  shown.hidden = false;
  clear(shown).append(
    h("p", {}, "Read this code to the person (it is shown only now):"),
    h("h2", { class: "support-code" }, h("output", { id: "support-code", "aria-label": "Support code" }, body.code)),
    h("p", { class: "muted" }, `Group ${body.group} · expires ${fmtTime(body.expires_at)} (in ${body.ttl_min} min) · `
      + "single use"),
    h("button", { type: "button", class: "link", onclick: () => { shown.hidden = true; clear(shown); } }, "Hide"));
  await load(lists);
}

async function connect(client, mode) {
  try {
    const s = await api.post(`/api/v1/support-clients/${encodeURIComponent(client.id)}/sessions`,
      { mode, reason: "support code session" });
    location.hash = `#/sessions/${encodeURIComponent(s.session_id)}`;
  } catch (err) { toast(err.message, "error"); }
}

async function revoke(code, lists) {
  try { await api.post(`/api/v1/support-codes/${encodeURIComponent(code.id)}/revoke`); } catch (err) {
    toast(err.message, "error");
  }
  await load(lists);
}

async function load(lists) {
  let data;
  try { data = await api.get("/api/v1/support-codes"); } catch (err) {
    clear(lists).append(unavailable("Support codes", err));
    return;
  }
  const me = session.me && session.me.user ? session.me.user.username : "";
  const mine = (row) => row.technician === me || (session.me && session.me.is_admin);
  const clients = data.clients || [];
  const codes = data.codes || [];
  clear(lists).append(
    h("h2", {}, "Support clients"),
    clients.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid support-clients" },
      h("thead", {}, h("tr", {}, ["Machine", "User", "Address", "Group", "Technician", "Connected", "Session", ""]
        .map((c) => h("th", {}, c)))),
      h("tbody", {}, clients.map((c) => h("tr", { dataset: { client: c.id }, class: c.waiting ? "waiting" : "" },
        h("td", {}, text(c.hostname)), h("td", {}, text(c.user)), h("td", {}, text(c.address)),
        h("td", {}, text(c.group)), h("td", {}, text(c.technician)), h("td", {}, ago(c.connected_at)),
        h("td", {}, c.session_id && c.session_id !== "pending"
          ? h("a", { href: `#/sessions/${encodeURIComponent(c.session_id)}` }, badge(c.session_state || "session"))
          : badge(c.waiting ? "waiting" : (c.ended_at ? "gone" : "…"))),
        h("td", {}, c.waiting && mine(c) ? [
          h("button", { type: "button", class: "primary support-connect", onclick: () => connect(c, "view") }, "Connect"),
          can("remote_control", c.group) ? h("button", { type: "button", class: "support-control",
            onclick: () => connect(c, "control") }, "Connect with control") : null] : null))))))
      : h("p", { class: "muted", id: "no-support-clients" }, "No support client has connected in the last day."),
    h("h2", {}, "Codes"),
    codes.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid support-codes" },
      h("thead", {}, h("tr", {}, ["Created", "Group", "Technician", "Reason", "Expires", "State", ""]
        .map((c) => h("th", {}, c)))),
      h("tbody", {}, codes.map((c) => h("tr", { dataset: { code: c.id } },
        h("td", {}, fmtTime(c.created_at)), h("td", {}, text(c.group)), h("td", {}, text(c.technician)),
        h("td", {}, text(c.reason)), h("td", {}, fmtTime(c.expires_at)), h("td", {}, badge(c.state)),
        h("td", {}, c.state === "live" && mine(c) ? h("button", { type: "button", class: "link support-revoke",
          onclick: () => revoke(c, lists) }, "Revoke") : null))))))
      : h("p", { class: "muted", id: "no-support-codes" }, "No support code in the last day."));
}
