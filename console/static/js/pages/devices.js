// Device list: search, filters, sort and paging are all done by the server (fast at 10k devices).
import * as api from "../api.js";
import { ago, badge, clear, h, text, unavailable } from "../dom.js";

const PER_PAGE = 50;
const COLUMNS = [
  ["hostname", "Hostname", true], ["group", "Group", true], ["status", "Status", true], ["os", "OS", false],
  ["ip", "IP", false], ["last_seen", "Last seen", true], ["alerts_open", "Alerts", false],
];
const query = { q: "", group: "", status: "", alert: "", sort: "hostname", order: "asc", page: 1 };
let body = null;
let footer = null;
let selected = -1;
let rows = [];
let total = 0;
let seq = 0;
let debounce = 0;

export async function show(main) {
  const search = h("input", { type: "search", id: "device-search", placeholder: "Search hostname, IP, OS, serial…  (/)",
    "data-search": "1", value: query.q, "aria-label": "Search devices",
    oninput: (ev) => { clearTimeout(debounce); debounce = setTimeout(() => { query.q = ev.target.value; query.page = 1; load(); }, 200); } });
  const group = h("select", { id: "filter-group", "aria-label": "Group", onchange: (ev) => set("group", ev.target.value) },
    h("option", { value: "" }, "All groups"));
  const status = h("select", { id: "filter-status", "aria-label": "Status", onchange: (ev) => set("status", ev.target.value) },
    ["", "online", "offline", "revoked"].map((s) => h("option", { value: s, selected: s === query.status }, s || "Any status")));
  const alert = h("label", { class: "check" }, h("input", { type: "checkbox", id: "filter-alert", checked: query.alert === "open",
    onchange: (ev) => set("alert", ev.target.checked ? "open" : "") }), "With open alerts");
  const head = h("tr", {}, COLUMNS.map(([key, label, sortable]) => h("th", { class: `col-${key}`, scope: "col",
    "aria-sort": query.sort === key ? (query.order === "asc" ? "ascending" : "descending") : undefined },
    sortable ? h("button", { class: "sort", type: "button", onclick: () => sortBy(key) }, label,
      query.sort === key ? (query.order === "asc" ? " ▲" : " ▼") : "") : label)));
  body = h("tbody", { id: "device-rows" });
  footer = h("div", { class: "pager", id: "device-pager" });
  main.append(h("section", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, "Devices"), h("span", { class: "muted", id: "device-total" })),
    h("div", { class: "toolbar" }, search, group, status, alert),
    h("div", { class: "table-wrap fixed-height" }, h("table", { class: "grid devices" }, h("thead", {}, head), body)),
    footer));
  api.get("/api/v1/groups").then((data) => {
    for (const g of data.items) group.append(h("option", { value: g.name, selected: g.name === query.group }, g.name));
  }).catch(() => {});
  await load();
}

function set(key, value) { query[key] = value; query.page = 1; load(); }

function sortBy(key) {
  if (query.sort === key) query.order = query.order === "asc" ? "desc" : "asc";
  else query.order = key === "last_seen" ? "desc" : "asc";  // newest first is what one wants
  query.sort = key;
  query.page = 1;
  const main = document.getElementById("main");
  clear(main);
  show(main);
}

async function load() {
  const mine = ++seq;
  let data;
  try {
    data = await api.get("/api/v1/devices", { ...query, per_page: PER_PAGE });
  } catch (err) {
    if (mine !== seq || !body) return;
    clear(body).append(h("tr", {}, h("td", { colspan: COLUMNS.length }, unavailable("Device list", err))));
    return;
  }
  if (mine !== seq || !body) return;  // a newer query answered first
  rows = data.items || [];
  total = data.total || 0;
  selected = -1;
  clear(body);
  if (!rows.length) body.append(h("tr", {}, h("td", { colspan: COLUMNS.length, class: "muted empty" }, "No devices match.")));
  for (const d of rows) {
    const href = `#/devices/${encodeURIComponent(d.id)}`;
    body.append(h("tr", { class: "clickable", dataset: { id: d.id }, onclick: () => { location.hash = href; } },
      h("td", { class: "col-hostname" }, h("a", { href, class: "hostname" }, text(d.hostname || d.id))),
      h("td", {}, text(d.group)),
      h("td", {}, badge(d.status || "unknown")),
      h("td", { class: "ellipsis" }, text(d.os)),
      h("td", { class: "mono" }, text(d.ip)),
      h("td", { title: d.last_seen ? new Date(d.last_seen * 1000).toLocaleString() : "" }, ago(d.last_seen)),
      h("td", {}, d.alerts_open ? badge("alert", String(d.alerts_open)) : "0")));
  }
  const pages = Math.max(1, Math.ceil(total / PER_PAGE));
  document.getElementById("device-total").textContent = `${total} device${total === 1 ? "" : "s"}`;
  clear(footer).append(
    h("button", { type: "button", disabled: query.page <= 1, onclick: () => page(-1) }, "← Previous"),
    h("span", {}, `Page ${query.page} of ${pages}`),
    h("button", { type: "button", disabled: query.page >= pages, onclick: () => page(1) }, "Next →"));
}

function page(delta) {
  const pages = Math.max(1, Math.ceil(total / PER_PAGE));
  const next = Math.min(pages, Math.max(1, query.page + delta));
  if (next !== query.page) { query.page = next; load(); }
}

function highlight(index) {
  const trs = body ? [...body.querySelectorAll("tr.clickable")] : [];
  if (!trs.length) return;
  selected = Math.max(0, Math.min(trs.length - 1, index));
  trs.forEach((tr, i) => tr.classList.toggle("selected", i === selected));
  trs[selected].scrollIntoView({ block: "nearest" });
}

export function key(ev) {
  if (ev.key === "j") highlight(selected + 1);
  else if (ev.key === "k") highlight(selected - 1);
  else if (ev.key === "Enter" && selected >= 0 && rows[selected]) location.hash = `#/devices/${encodeURIComponent(rows[selected].id)}`;
  else if (ev.key === "]") page(1);
  else if (ev.key === "[") page(-1);
}

export function leave() { body = null; footer = null; }
