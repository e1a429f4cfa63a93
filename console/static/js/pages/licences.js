// Licence compliance: entitlements counted against what the fleet has installed — over-use, unused
// seats, expiring contracts; admins create and edit entitlements; the report as CSV.
import * as api from "../api.js";
import { badge, fmtTime, h, text, toast, unavailable } from "../dom.js";
import { session } from "../state.js";

const isAdmin = () => Boolean(session.me && session.me.is_admin);
const field = (label, input) => h("label", { class: "field" }, h("span", {}, label), input);
const STATUS = { over_use: ["critical", "over-use"], expired: ["expired", "expired"], expiring: ["warning", "expiring"],
  unused_seats: ["info", "unused seats"], ok: ["ok", "ok"] };

export async function show(main) {
  let items;
  try {
    items = (await api.get("/api/v1/cmdb/licences")).items;
  } catch (err) { main.append(unavailable("Licences", err)); return; }
  const over = items.filter((l) => l.status === "over_use").length;
  const form = isAdmin() ? licenceForm() : null;
  main.append(h("section", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, "Licences"),
      h("span", { class: "muted", id: "licence-summary" }, `${items.length} entitlement(s), ${over} over-used`),
      h("div", { class: "actions" },
        h("a", { href: "/api/v1/cmdb/licences.csv", id: "licences-csv", download: "licences.csv" }, "Export CSV"),
        isAdmin() ? h("button", { type: "button", class: "primary", id: "licence-new",
          onclick: () => form.open(null) }, "New entitlement") : null)),
    form ? form.el : null,
    items.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "licences" },
      h("thead", {}, h("tr", {}, ["Product", "Pattern", "Versions", "Seats", "Installed", "Unused", "Over", "Status",
        "Owner", "Expires", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, items.map((l) => h("tr", { dataset: { id: l.id, status: l.status } },
        h("td", { class: "product" }, text(l.product)), h("td", { class: "mono" }, text(l.pattern)),
        h("td", { class: "mono" }, versions(l)), h("td", { class: "seats" }, String(l.seats)),
        h("td", { class: "installed" }, h("button", { type: "button", class: "link", onclick: (ev) => installs(ev, l) },
          String(l.installed))),
        h("td", { class: "unused" }, String(l.unused)), h("td", { class: "over" }, String(l.over)),
        h("td", { class: "status" }, badge(...STATUS[l.status] || [l.status, l.status])),
        h("td", {}, text(l.owner)), h("td", {}, l.expires_at ? fmtTime(l.expires_at) : "—"),
        h("td", {}, isAdmin() ? [h("button", { type: "button", class: "link edit", onclick: () => form.open(l) }, "Edit"),
          h("button", { type: "button", class: "link delete", onclick: () => remove(l) }, "Delete")] : ""))))))
      : h("p", { class: "muted" }, "No entitlements yet.")));
}

function versions(l) {
  if (!l.version_min && !l.version_below) return "any";
  return `${l.version_min ? `≥ ${l.version_min}` : ""}${l.version_min && l.version_below ? ", " : ""}`
    + `${l.version_below ? `< ${l.version_below}` : ""}`;
}

async function installs(ev, l) {
  const row = ev.target.closest("tr");
  const next = row.nextElementSibling;
  if (next && next.classList.contains("installs")) { next.remove(); return; }
  try {
    const data = await api.get(`/api/v1/cmdb/licences/${encodeURIComponent(l.id)}/installations`);
    row.after(h("tr", { class: "installs" }, h("td", { colspan: "11" }, data.items.length
      ? h("ul", { class: "plain" }, data.items.map((i) => h("li", {},
        h("a", { href: `#/devices/${encodeURIComponent(i.device_id)}` }, text(i.hostname || i.device_id)),
        ` — ${i.package} ${i.version}`)))
      : h("span", { class: "muted" }, "No installations in groups you may view."))));
  } catch (err) { toast(err.message, "error"); }
}

async function remove(l) {
  try {
    await api.del(`/api/v1/cmdb/licences/${encodeURIComponent(l.id)}`);
    toast(`Entitlement ${l.product} deleted.`);
    rerender();
  } catch (err) { toast(err.message, "error"); }
}

function licenceForm() {
  const inputs = {
    product: h("input", { id: "licence-product", required: true, maxlength: "200" }),
    pattern: h("input", { id: "licence-pattern", required: true, maxlength: "200", placeholder: "libreoffice*" }),
    seats: h("input", { id: "licence-seats", type: "number", min: "0", required: true }),
    version_min: h("input", { id: "licence-version-min", maxlength: "128", placeholder: "e.g. 7" }),
    version_below: h("input", { id: "licence-version-below", maxlength: "128", placeholder: "e.g. 8" }),
    owner: h("input", { id: "licence-owner", maxlength: "200" }),
    expires: h("input", { id: "licence-expires", type: "date" }),
    notes: h("input", { id: "licence-notes", maxlength: "2000" }),
  };
  let editing = null;
  const title = h("h2", {});
  const el = h("form", { class: "card", id: "licence-form", hidden: true, onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { product: inputs.product.value, pattern: inputs.pattern.value, seats: Number(inputs.seats.value),
      version_min: inputs.version_min.value, version_below: inputs.version_below.value, owner: inputs.owner.value,
      notes: inputs.notes.value,
      expires_at: inputs.expires.value ? Date.parse(`${inputs.expires.value}T23:59:59`) / 1000 : null };
    try {
      if (editing) await api.put(`/api/v1/cmdb/licences/${encodeURIComponent(editing.id)}`, body);
      else await api.post("/api/v1/cmdb/licences", body);
      toast(editing ? "Entitlement saved." : "Entitlement created.");
      rerender();
    } catch (err) { toast(err.message, "error"); }
  } }, h("div", { class: "form-grid" }, title,
    field("Product", inputs.product), field("Package name pattern (* and ?)", inputs.pattern),
    field("Seats", inputs.seats), field("From version (inclusive)", inputs.version_min),
    field("Below version", inputs.version_below), field("Owner", inputs.owner), field("Expires", inputs.expires),
    field("Notes", inputs.notes),
    h("div", { class: "inline" }, h("button", { type: "submit", class: "primary", id: "licence-save" }, "Save"),
      h("button", { type: "button", onclick: () => { el.hidden = true; } }, "Cancel"))));
  const open = (l) => {
    editing = l;
    title.textContent = l ? `Edit ${l.product}` : "New entitlement";
    for (const k of ["product", "pattern", "version_min", "version_below", "owner", "notes"]) inputs[k].value = l ? l[k] : "";
    inputs.seats.value = l ? String(l.seats) : "";
    inputs.expires.value = l && l.expires_at ? new Date(l.expires_at * 1000).toISOString().slice(0, 10) : "";
    el.hidden = false;
    inputs.product.focus();
  };
  return { el, open };
}

function rerender() { window.dispatchEvent(new HashChangeEvent("hashchange")); }
