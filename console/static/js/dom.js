// DOM helpers. Everything a device reports is hostile: text goes in with textContent
// (text nodes), never innerHTML; attributes are set one by one, never from markup.

const BLOCKED_ATTRS = /^(on|style$|srcdoc$)/i;

/** Create an element: h("td", {class: "x", onclick: fn}, "text", childNode, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (BLOCKED_ATTRS.test(name)) {
      throw new Error(`attribute ${name} is not allowed`);
    } else if (name === "value" || name === "checked" || name === "disabled" || name === "hidden") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export function fmtTime(ts) {
  if (ts === null || ts === undefined || ts === "") return "—";
  const d = new Date(Number(ts) * 1000);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleString();
}

export function ago(ts) {
  if (!ts) return "never";
  const s = Math.max(0, Date.now() / 1000 - Number(ts));
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined || n === "" || Number.isNaN(Number(n))) return "—";
  let v = Number(n);
  for (const unit of ["B", "KiB", "MiB", "GiB", "TiB"]) {
    if (Math.abs(v) < 1024 || unit === "TiB") return `${v.toFixed(unit === "B" ? 0 : 1)} ${unit}`;
    v /= 1024;
  }
  return String(n);
}

/** A value of unknown shape as text (objects as compact JSON). */
export function text(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function badge(state, label = state) {
  return h("span", { class: `badge state-${String(state).replace(/[^a-z_]/gi, "")}` }, label);
}

/** A "this part is not available (yet)" panel, for routes another part of the server has not shipped. */
export function unavailable(what, err) {
  return h("div", { class: "notice notice-muted", role: "note" },
    h("strong", {}, `${what}: not available`),
    h("span", {}, err && err.status === 404 ? " — this server does not provide it yet."
      : ` — ${err ? err.message : "unknown error"}`));
}

export function errorBox(err) {
  return h("div", { class: "notice notice-error", role: "alert" }, err.message || String(err));
}

let toastTimer = 0;
export function toast(message, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = `toast toast-${kind}`;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

/** Generic rendering of an inventory value: object → key/value list, list of objects → table. */
export function renderValue(value) {
  if (Array.isArray(value)) {
    if (value.length === 0) return h("p", { class: "muted" }, "none reported");
    if (value.every((v) => v && typeof v === "object" && !Array.isArray(v))) {
      const cols = [...new Set(value.flatMap((v) => Object.keys(v)))];
      return h("div", { class: "table-wrap" }, h("table", { class: "grid" },
        h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c.replaceAll("_", " "))))),
        h("tbody", {}, value.map((row) => h("tr", {}, cols.map((c) => h("td", {}, cellText(c, row[c]))))))));
    }
    return h("ul", { class: "plain" }, value.map((v) => h("li", {}, text(v))));
  }
  if (value && typeof value === "object") {
    return h("dl", { class: "kv" }, Object.entries(value).flatMap(([k, v]) => [
      h("dt", {}, k.replaceAll("_", " ")),
      h("dd", {}, v && typeof v === "object" ? renderValue(v) : cellText(k, v)),
    ]));
  }
  return h("p", {}, text(value));
}

function cellText(key, value) {
  if (typeof value === "number" && /bytes|size|total|free|used|memory|capacity/i.test(key) && value > 4096) {
    return fmtBytes(value);
  }
  if (typeof value === "number" && /(^|_)(at|ts|time|seen|boot)$/i.test(key) && value > 1e9) return fmtTime(value);
  return text(value);
}
