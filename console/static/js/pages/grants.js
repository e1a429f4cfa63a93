// Unattended-access grants: list, create, approve, revoke (server signs with the org grant key).
import * as api from "../api.js";
import { badge, clear, fmtTime, h, text, toast, unavailable } from "../dom.js";
import { can } from "../state.js";

export async function show(main) {
  const list = h("div", { id: "grants-list" });
  const form = createForm(() => load(list));
  main.append(h("section", { class: "page" }, h("div", { class: "page-head" }, h("h1", {}, "Grants")),
    h("p", { class: "muted" }, "A grant lets named technicians (or roles) open sessions or run tasks without the "
      + "user's prompt, within time windows. Agents verify the signature themselves."),
    can("manage_grants") ? form : null, list));
  await load(list);
}

function field(label, input) { return h("label", { class: "field" }, h("span", {}, label), input); }

function createForm(reload) {
  const devices = h("input", { id: "grant-devices", placeholder: "device ids, comma-separated" });
  const groups = h("input", { id: "grant-groups", placeholder: "groups, comma-separated" });
  const techs = h("input", { id: "grant-technicians", placeholder: "usernames" });
  const roles = h("input", { id: "grant-roles", placeholder: "roles, e.g. technician" });
  const actions = ["view", "control", "tasks"].map((a) => h("label", { class: "check" },
    h("input", { type: "checkbox", value: a, checked: a === "view" }), a));
  const hours = h("input", { type: "number", min: "1", max: "8760", value: "24", id: "grant-hours" });
  const windows = h("input", { id: "grant-windows", placeholder: "optional: days 0-6 and hours, e.g. 0,1,2,3,4 22:00-06:00" });
  const reason = h("input", { id: "grant-reason", required: true, placeholder: "why (ticket, maintenance…)" });
  const split = (el) => el.value.split(",").map((s) => s.trim()).filter(Boolean);
  return h("form", { class: "card form-grid", onsubmit: async (ev) => {
    ev.preventDefault();
    const win = windows.value.trim() ? [(() => {
      const [days, span] = windows.value.trim().split(/\s+/);
      const [start, endAt] = (span || "").split("-");
      return { days: days.split(",").map(Number), start, end: endAt };
    })()] : [];
    try {
      await api.post("/api/v1/grants", { devices: split(devices), groups: split(groups), technicians: split(techs),
        roles: split(roles), actions: actions.map((l) => l.firstChild).filter((i) => i.checked).map((i) => i.value),
        duration_s: Number(hours.value) * 3600, windows: win, reason: reason.value });
      toast("Grant created.");
      reload();
    } catch (err) { toast(err.message, "error"); }
  } }, h("h2", {}, "New grant"), field("Devices", devices), field("Groups", groups), field("Technicians", techs),
  field("Roles", roles), h("div", { class: "field" }, h("span", {}, "Actions"), ...actions),
  field("Valid for (hours)", hours), field("Time window", windows), field("Reason", reason),
  h("button", { type: "submit", class: "primary" }, "Create grant"));
}

async function load(list) {
  let data;
  try { data = await api.get("/api/v1/grants"); } catch (err) { clear(list).append(unavailable("Grants", err)); return; }
  const grants = data.grants || data.items || [];
  clear(list).append(grants.length ? h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, ["Status", "Scope", "Who", "Actions", "Valid", "Reason", "Issued / approved", ""].map((c) => h("th", {}, c)))),
    h("tbody", {}, grants.map((g) => h("tr", {},
      h("td", {}, badge(g.status)),
      h("td", {}, text([...(g.devices || []), ...(g.groups || []).map((x) => `group ${x}`)].join(", "))),
      h("td", {}, text([...(g.technicians || []), ...(g.roles || []).map((x) => `role ${x}`)].join(", "))),
      h("td", {}, text((g.actions || []).join(", "))),
      h("td", {}, `${fmtTime(g.not_before)} → ${fmtTime(g.not_after)}`),
      h("td", {}, text(g.reason)),
      h("td", {}, text(`${g.created_by || g.issuer || ""}${g.approved_by ? ` / ${g.approved_by}` : ""}`)),
      h("td", { class: "row-actions" },
        g.status === "pending" && can("approve_grants") ? h("button", { type: "button", onclick: () => act(g, "approve", list) }, "Approve") : null,
        !["revoked", "expired"].includes(g.status) && can("manage_grants") ? h("button", { type: "button", class: "danger", onclick: () => act(g, "revoke", list) }, "Revoke") : null)))))
    : h("p", { class: "muted" }, "No grants."));
}

async function act(grant, action, list) {
  try {
    await api.post(`/api/v1/grants/${encodeURIComponent(grant.grant_id)}/${action}`);
    toast(`Grant ${action}d.`);
  } catch (err) { toast(err.message, "error"); }
  await load(list);
}
