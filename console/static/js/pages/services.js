// Business services and declared relations (device runs service, X depends on Y); a service's page
// shows what breaks if it goes down and what it needs, transitively, with cycles.
import * as api from "../api.js";
import { fmtTime, h, text, toast, unavailable } from "../dom.js";
import { session } from "../state.js";
import { impactPanel } from "../cmdb_ui.js";

const isAdmin = () => Boolean(session.me && session.me.is_admin);
const field = (label, input) => h("label", { class: "field" }, h("span", {}, label), input);

export async function show(main, serviceId) {
  let services;
  try {
    services = (await api.get("/api/v1/cmdb/services")).items;
  } catch (err) { main.append(unavailable("Business services", err)); return; }
  if (serviceId) { await showService(main, services, serviceId); return; }
  const page = h("section", { class: "page" }, h("div", { class: "page-head" }, h("h1", {}, "Business services"),
    h("span", { class: "muted" }, `${services.length} service${services.length === 1 ? "" : "s"}`)));
  main.append(page);
  if (isAdmin()) page.append(serviceForm(), relationForm(services));
  page.append(services.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "services" },
    h("thead", {}, h("tr", {}, ["Service", "Owner", "Description", "Relations", "Created"].map((c) => h("th", {}, c)))),
    h("tbody", {}, services.map((s) => h("tr", { dataset: { id: s.id } },
      h("td", {}, h("a", { href: `#/services/${encodeURIComponent(s.id)}`, class: "service-name" }, text(s.name))),
      h("td", {}, text(s.owner)), h("td", {}, text(s.description)), h("td", {}, String(s.relations)),
      h("td", {}, `${fmtTime(s.created_at)} by ${s.created_by}`))))))
    : h("p", { class: "muted" }, "No business services yet."));
}

function serviceForm() {
  const name = h("input", { id: "service-name", required: true, maxlength: "200" });
  const owner = h("input", { id: "service-owner", maxlength: "200" });
  const description = h("input", { id: "service-description", maxlength: "1000" });
  return h("form", { class: "card", id: "service-form", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await api.post("/api/v1/cmdb/services", { name: name.value, owner: owner.value, description: description.value });
      toast(`Service ${name.value} created.`);
      rerender();
    } catch (err) { toast(err.message, "error"); }
  } }, h("div", { class: "form-grid" }, h("h2", {}, "New business service"),
    field("Name", name), field("Owner", owner), field("Description", description),
    h("div", {}, h("button", { type: "submit", class: "primary", id: "service-create" }, "Create"))));
}

function nodePicker(prefix, services, types) {
  const type = h("select", { id: `${prefix}-type`, "aria-label": `${prefix} type` },
    types.map((t) => h("option", { value: t }, t)));
  const service = h("select", { id: `${prefix}-service`, "aria-label": `${prefix} service` },
    services.map((s) => h("option", { value: s.id }, s.name)));
  const device = h("input", { id: `${prefix}-device`, placeholder: "device id", "aria-label": `${prefix} device id` });
  const sync = () => { service.hidden = type.value !== "service"; device.hidden = type.value !== "device"; };
  type.addEventListener("change", sync);
  sync();
  return { el: h("div", { class: "inline" }, type, service, device),
    value: () => ({ type: type.value, id: type.value === "service" ? service.value : device.value.trim() }), type, sync };
}

function relationForm(services) {
  const kind = h("select", { id: "relation-kind", "aria-label": "Kind" },
    h("option", { value: "depends_on" }, "depends on"), h("option", { value: "runs" }, "runs"));
  const source = nodePicker("relation-source", services, ["service", "device"]);
  const target = nodePicker("relation-target", services, ["service", "device"]);
  kind.addEventListener("change", () => {  // runs: a device runs a service
    if (kind.value === "runs") { source.type.value = "device"; target.type.value = "service"; source.sync(); target.sync(); }
  });
  return h("form", { class: "card", id: "relation-form", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await api.post("/api/v1/cmdb/relations", { kind: kind.value, source: source.value(), target: target.value() });
      toast("Relation declared.");
      rerender();
    } catch (err) { toast(err.message, "error"); }
  } }, h("div", { class: "form-grid" }, h("h2", {}, "Declare a relation"),
    field("From", source.el), field("Kind", kind), field("To", target.el),
    h("div", {}, h("button", { type: "submit", class: "primary", id: "relation-create" }, "Declare"))));
}

async function showService(main, services, serviceId) {
  const svc = services.find((s) => s.id === serviceId);
  const page = h("section", { class: "page" }, h("p", { class: "crumbs" }, h("a", { href: "#/services" }, "← Services")));
  main.append(page);
  if (!svc) { page.append(h("div", { class: "notice notice-error", role: "alert" }, "No such service.")); return; }
  page.append(h("div", { class: "page-head" }, h("h1", { id: "service-title" }, text(svc.name)),
    isAdmin() ? h("div", { class: "actions" }, h("button", { type: "button", class: "danger", id: "service-delete",
      onclick: async () => {
        try { await api.del(`/api/v1/cmdb/services/${encodeURIComponent(svc.id)}`); location.hash = "#/services"; }
        catch (err) { toast(err.message, "error"); }
      } }, "Delete service")) : null),
  h("dl", { class: "summary" }, h("dt", {}, "Owner"), h("dd", {}, text(svc.owner)),
    h("dt", {}, "Description"), h("dd", {}, text(svc.description))));
  page.append(await impactPanel(`/api/v1/cmdb/services/${encodeURIComponent(svc.id)}/impact`,
    { type: "service", id: svc.id, name: svc.name }));
  const rels = (await api.get("/api/v1/cmdb/relations")).items.filter((r) =>
    (r.source.type === "service" && r.source.id === svc.id) || (r.target.type === "service" && r.target.id === svc.id));
  const names = new Map(services.map((s) => [s.id, s.name]));
  const label = (n) => (n.type === "service" ? names.get(n.id) || n.id : `device ${n.id}`);
  page.append(h("section", { class: "card" }, h("h2", {}, "Declared relations"), rels.length
    ? h("table", { class: "grid", id: "service-relations" }, h("tbody", {}, rels.map((r) => h("tr", { dataset: { id: r.id } },
      h("td", {}, text(label(r.source))), h("td", {}, r.kind === "runs" ? "runs" : "depends on"),
      h("td", {}, text(label(r.target))), h("td", {}, `${fmtTime(r.created_at)} by ${r.created_by}`),
      h("td", {}, isAdmin() ? h("button", { type: "button", class: "link", onclick: async () => {
        try { await api.del(`/api/v1/cmdb/relations/${encodeURIComponent(r.id)}`); rerender(); }
        catch (err) { toast(err.message, "error"); }
      } }, "Remove") : "")))))
    : h("p", { class: "muted" }, "None.")));
}

function rerender() { window.dispatchEvent(new HashChangeEvent("hashchange")); }
