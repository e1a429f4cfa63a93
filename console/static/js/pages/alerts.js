// Alerts across the fleet (the devices the user may see).
import * as api from "../api.js";
import { badge, clear, fmtTime, h, text, unavailable } from "../dom.js";

let status = "open";

export async function show(main) {
  const body = h("div", { id: "alerts-body" });
  const select = h("select", { "aria-label": "Status", onchange: (ev) => { status = ev.target.value; load(body); } },
    ["open", "resolved", ""].map((s) => h("option", { value: s, selected: s === status }, s || "all")));
  main.append(h("section", { class: "page" }, h("div", { class: "page-head" }, h("h1", {}, "Alerts")),
    h("div", { class: "toolbar" }, select), body));
  await load(body);
}

async function load(body) {
  let data;
  try {
    data = await api.get("/api/v1/alerts", { status });
  } catch (err) {
    clear(body).append(unavailable("Alerts", err));
    return;
  }
  const items = data.items || data.alerts || [];
  clear(body).append(items.length ? h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, ["Severity", "Device", "Rule", "Subject", "Message", "Status", "Opened"].map((c) => h("th", {}, c)))),
    h("tbody", {}, items.map((a) => h("tr", {},
      h("td", {}, badge(a.severity || "info")),
      h("td", {}, h("a", { href: `#/devices/${encodeURIComponent(a.device_id)}` }, text(a.hostname || a.device_id))),
      h("td", {}, text(a.rule)), h("td", {}, text(a.subject)), h("td", {}, text(a.message)),
      h("td", {}, badge(a.status || "open")), h("td", {}, fmtTime(a.opened_at))))))
    : h("p", { class: "muted" }, "No alerts."));
}
