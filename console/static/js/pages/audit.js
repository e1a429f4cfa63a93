// Audit log: filter, page (newest first), verify the hash chain.
import * as api from "../api.js";
import { clear, fmtTime, h, text, unavailable } from "../dom.js";

const filters = { actor: "", action: "", target: "" };
let before = null;

export async function show(main) {
  const body = h("tbody", { id: "audit-rows" });
  const verdict = h("span", { id: "audit-verdict", class: "muted" });
  const more = h("button", { type: "button", id: "audit-more", hidden: true, onclick: () => load(body, more, true) }, "Older records");
  const input = (key, placeholder) => h("input", { "aria-label": key, placeholder, value: filters[key], "data-search": key === "action" ? "1" : undefined,
    onchange: (ev) => { filters[key] = ev.target.value.trim(); load(body, more, false); } });
  main.append(h("section", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, "Audit log"),
      h("button", { type: "button", id: "audit-verify", onclick: async () => {
        verdict.textContent = "verifying…";
        try {
          const r = await api.get("/api/v1/audit/verify");
          verdict.className = r.ok ? "ok" : "bad";
          verdict.textContent = r.ok ? `Chain intact: ${r.records} records` : `BROKEN at record ${r.first_bad_seq}: ${r.problem}`;
        } catch (err) { verdict.textContent = err.message; }
      } }, "Verify chain"), verdict),
    h("div", { class: "toolbar" }, input("actor", "actor"), input("action", "action, e.g. auth.* or session.*"), input("target", "target")),
    h("div", { class: "table-wrap" }, h("table", { class: "grid audit" },
      h("thead", {}, h("tr", {}, ["#", "Time", "Actor", "Action", "Target", "Details"].map((c) => h("th", {}, c)))), body)),
    more));
  await load(body, more, false);
}

async function load(body, more, append) {
  if (!append) before = null;
  let data;
  try { data = await api.get("/api/v1/audit", { ...filters, before, limit: 100 }); } catch (err) {
    clear(body).append(h("tr", {}, h("td", { colspan: 6 }, unavailable("Audit log", err))));
    return;
  }
  if (!append) clear(body);
  for (const r of data.items) {
    body.append(h("tr", {}, h("td", { class: "mono" }, String(r.seq)), h("td", {}, fmtTime(r.ts)), h("td", {}, text(r.actor)),
      h("td", { class: "mono" }, text(r.action)), h("td", { class: "mono" }, text(r.target)),
      h("td", { class: "details" }, text(r.details))));
  }
  before = data.next_before;
  more.hidden = before === null;
}
