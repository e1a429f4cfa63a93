// Shared CMDB views: "what depends on what" for a device or a business service (impact walks),
// with cycles shown. Everything here comes from the store (agent-reported names included): text only.
import * as api from "./api.js";
import { badge, h, text } from "./dom.js";

function nodeHref(n) {
  return n.type === "device" ? `#/devices/${encodeURIComponent(n.id)}` : `#/services/${encodeURIComponent(n.id)}`;
}

function nodeLink(n, names) {
  const name = names.get(`${n.type}:${n.id}`) || n.name || n.id;
  return h("span", { class: "cmdb-node" }, badge(n.type === "device" ? "info" : "view", n.type), " ",
    h("a", { href: nodeHref(n) }, text(name)));
}

function walkTable(id, items, names, verb) {
  if (!items.length) return h("p", { class: "muted", id: `${id}-none` }, "Nothing.");
  return h("div", { class: "table-wrap" }, h("table", { class: "grid", id },
    h("thead", {}, h("tr", {}, ["Item", "Depth", verb].map((c) => h("th", {}, c)))),
    h("tbody", {}, items.map((i) => h("tr", { dataset: { type: i.type, id: i.id, depth: String(i.depth) } },
      h("td", {}, nodeLink(i, names)), h("td", { class: "depth" }, String(i.depth)),
      h("td", {}, i.via.kind === "runs" ? "runs on / runs " : "depends on / needed by ", nodeLink(i.via, names)))))));
}

/** The impact panel: what breaks if `item` goes down, what it needs, and the cycles met on the way. */
export async function impactPanel(path, item) {
  const data = await api.get(path);
  const names = new Map([[`${item.type}:${item.id}`, item.name || item.id]]);
  for (const i of [...data.breaks, ...data.needs]) names.set(`${i.type}:${i.id}`, i.name || i.id);
  const hidden = (n) => (n ? h("p", { class: "muted" }, `${n} more device(s) in groups you may not view.`) : null);
  const cycles = data.cycles.length ? h("div", { class: "notice notice-muted", id: "impact-cycles", role: "note" },
    h("strong", {}, `Cycle${data.cycles.length > 1 ? "s" : ""} in the dependencies (the walk stops there): `),
    h("ul", { class: "plain" }, data.cycles.map((c) => h("li", { class: "cycle" }, nodeLink(c.from, names), " → ",
      nodeLink(c.to, names))))) : null;
  return h("div", { id: "impact" },
    h("section", { class: "card" }, h("h2", {}, "What breaks if it goes down"),
      walkTable("impact-breaks", data.breaks, names, "Reached through"), hidden(data.breaks_hidden)),
    h("section", { class: "card" }, h("h2", {}, "What it needs"),
      walkTable("impact-needs", data.needs, names, "Reached through"), hidden(data.needs_hidden)),
    cycles,
    data.truncated ? h("p", { class: "notice notice-muted" }, "The walk was cut short (too many items).") : null);
}

export function severityBadge(sev) {
  const state = { critical: "critical", high: "bad", medium: "warning", low: "info" }[sev] || "unknown";
  return badge(state, sev || "unknown");
}
