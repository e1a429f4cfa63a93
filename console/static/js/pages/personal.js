// Personal data (issue 17): per device group, whether agents collect local accounts and login history,
// and how many days of login history the CMDB keeps. Group admins switch their groups; the retention is
// fleet-wide (administer on every group). Changes reach connected agents at once.
import * as api from "../api.js";
import { badge, h, text, toast, unavailable } from "../dom.js";
import { can, session } from "../state.js";

const isAdmin = () => Boolean(session.me && session.me.is_admin);

export async function show(main) {
  let data;
  try {
    data = await api.get("/api/v1/cmdb/personal-data");
  } catch (err) { main.append(unavailable("Personal data", err)); return; }
  const days = h("input", { id: "retention-days", type: "number", min: "1", max: "3650", required: true,
    value: String(data.login_retention_days), disabled: !isAdmin() });
  const retention = h("form", { class: "card", id: "retention-form", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await api.put("/api/v1/cmdb/personal-data/retention", { login_retention_days: Number(days.value) });
      toast(`Login history kept ${days.value} days.`);
      rerender();
    } catch (err) { toast(err.message, "error"); }
  } }, h("label", { class: "field" }, h("span", {}, "Keep login history (days)"), days),
  isAdmin() ? h("button", { type: "submit", class: "primary", id: "retention-save" }, "Save") : null);
  main.append(h("section", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, "Personal data"),
      h("span", { class: "muted" }, "Local accounts and login history are personal data.")),
    retention,
    data.groups.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "personal-groups" },
      h("thead", {}, h("tr", {}, ["Device group", "Local accounts and login history", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, data.groups.map((g) => h("tr", { dataset: { group: g.name, collect: String(g.collect) } },
        h("td", { class: "group" }, text(g.name)),
        h("td", { class: "state" }, g.collect ? badge("ok", "collected") : badge("info", "not collected")),
        h("td", {}, can("administer", g.name) ? h("button", { type: "button", class: "switch",
          title: g.collect ? "Agents stop collecting at once; what the CMDB holds for the group is deleted" : "",
          onclick: () => change(g, !g.collect) }, g.collect ? "Stop collecting" : "Collect") : ""))))))
      : h("p", { class: "muted" }, "No device groups you may view.")));
}

async function change(g, collect) {
  try {
    await api.put(`/api/v1/groups/${encodeURIComponent(g.name)}/personal-data`, { collect });
    toast(collect ? `${g.name}: collecting again.` : `${g.name}: no longer collected.`);
    rerender();
  } catch (err) { toast(err.message, "error"); }
}

function rerender() { window.dispatchEvent(new HashChangeEvent("hashchange")); }
