// The console shell: hash router, top navigation, keyboard shortcuts.
import * as api from "./api.js";
import { clear, h, toast } from "./dom.js";
import { can, loadMe, session } from "./state.js";
import * as login from "./pages/login.js";
import * as devices from "./pages/devices.js";
import * as device from "./pages/device.js";
import * as viewer from "./pages/viewer.js";
import * as alerts from "./pages/alerts.js";
import * as grants from "./pages/grants.js";
import * as auditPage from "./pages/audit.js";
import * as users from "./pages/users.js";
import * as tasks from "./pages/tasks.js";
import * as task from "./pages/task.js";
import * as player from "./pages/player.js";
import * as account from "./pages/account.js";
import * as approvals from "./pages/approvals.js";
import * as passwordChange from "./pages/password.js";
import * as services from "./pages/services.js";
import * as licences from "./pages/licences.js";
import * as vulns from "./pages/vulns.js";
import * as personal from "./pages/personal.js";
import * as tickets from "./pages/tickets.js";
import * as kpis from "./pages/kpis.js";
import * as support from "./pages/support.js";
import * as queue from "./pages/queue.js";

const ROUTES = [
  [/^#\/login$/, login, false],
  [/^#\/devices$/, devices, true],
  [/^#\/devices\/([^/]+)$/, device, true],
  [/^#\/devices\/([^/]+)\/([a-z]+)$/, device, true],
  [/^#\/tasks$/, tasks, true],
  [/^#\/tasks\/([^/]+)$/, task, true],
  [/^#\/recordings\/([^/]+)$/, player, true],
  [/^#\/account$/, account, true],
  [/^#\/sessions\/([^/]+)$/, viewer, true],
  [/^#\/alerts$/, alerts, true],
  [/^#\/grants$/, grants, true],
  [/^#\/approvals$/, approvals, true],
  [/^#\/approvals\/([^/]+)$/, approvals, true],
  [/^#\/audit$/, auditPage, true],
  [/^#\/users$/, users, true],
  [/^#\/services$/, services, true],
  [/^#\/services\/([^/]+)$/, services, true],
  [/^#\/licences$/, licences, true],
  [/^#\/vulnerabilities$/, vulns, true],
  [/^#\/vulnerabilities\/([^/]+)$/, vulns, true],
  [/^#\/personal-data$/, personal, true],
  [/^#\/tickets$/, tickets, true],
  [/^#\/kpis$/, kpis, true],
  [/^#\/support$/, support, true],
  [/^#\/queue$/, queue, true],
];

/** The menu: [heading, [[href, label, visible], ...]]; a heading shows when any of its pages does. */
const NAV = [
  ["Help desk", [
    ["#/queue", "Queue", () => can("view_inventory")],
    ["#/support", "Support codes", () => can("remote_view")],
    ["#/tickets", "Tickets", () => can("remote_view")],
    ["#/kpis", "Desk numbers", () => can("view_inventory")],
  ]],
  ["Fleet", [
    ["#/devices", "Devices", () => true],
    ["#/alerts", "Alerts", () => true],
    ["#/services", "Services", () => can("view_inventory")],
    ["#/licences", "Licences", () => can("view_inventory")],
    ["#/vulnerabilities", "Vulnerabilities", () => can("view_inventory")],
    ["#/personal-data", "Personal data", () => can("view_inventory")],
  ]],
  ["Automation", [
    ["#/tasks", "Tasks", () => can("run_tasks")],
    ["#/grants", "Documents", () => can("manage_grants") || can("approve_grants")],
    ["#/approvals", "Approvals", () => can("approve_grants") || can("manage_grants")],
  ]],
  ["Administration", [
    ["#/audit", "Audit log", () => session.me && session.me.is_admin],
    ["#/users", "Users & groups", () => session.me && session.me.is_admin],
  ]],
];

/** The menu folded away (the technician's choice, kept in this browser): more room for a device's screen. */
const FOLDED_KEY = "helpline.menu.folded";

function menuFolded() {
  try { return localStorage.getItem(FOLDED_KEY) === "1"; } catch { return false; }
}

function setMenuFolded(folded) {
  try { localStorage.setItem(FOLDED_KEY, folded ? "1" : "0"); } catch { /* private mode: this page only */ }
  document.body.classList.toggle("menu-folded", folded);
  document.getElementById("nav-toggle").setAttribute("aria-expanded", String(!folded));
}

let current = null;  // the page module showing now (may have leave())
const main = document.getElementById("main");

/** Logged in with a generated password: nothing but the change form until it is changed. */
function mustChangePassword() {
  return Boolean(session.me && session.me.user && session.me.user.must_change_password);
}

function renderChrome() {
  const top = document.getElementById("topbar");
  top.hidden = !session.me || mustChangePassword();
  document.getElementById("sidebar").hidden = top.hidden;
  if (top.hidden) return;
  setMenuFolded(menuFolded());
  const nav = clear(document.getElementById("nav"));
  for (const [heading, pages] of NAV) {
    const links = pages.filter(([, , visible]) => visible()).map(([href, label]) => {
      const active = location.hash.startsWith(href);
      return h("a", { href, class: active ? "active" : "", "aria-current": active ? "page" : undefined }, label);
    });
    if (links.length) nav.append(h("div", { class: "nav-group", role: "group", "aria-label": heading },
      h("div", { class: "nav-heading" }, heading), links));
  }
  const who = clear(document.getElementById("whoami"));
  who.append(h("a", { class: "user", href: "#/account", id: "my-account", title: "My account: sessions and API tokens" },
    session.me.user.username),
    h("span", { class: `role role-${session.me.user.role}` }, session.me.user.role),
    h("button", { class: "link", type: "button", onclick: logout }, "Log out"),
    h("button", { class: "link", type: "button", title: "Keyboard shortcuts (?)",
      onclick: () => document.getElementById("help").showModal() }, "?"));
}

async function logout() {
  try { await api.post("/api/v1/auth/logout"); } catch (err) { toast(err.message, "error"); }
  session.me = null;
  api.setCsrf(null);
  location.hash = "#/login";
}

async function route() {
  const hash = location.hash || "#/devices";
  if (current && current.leave) current.leave();
  current = null;
  if (mustChangePassword()) {
    renderChrome();
    passwordChange.show(main);
    return;
  }
  for (const [pattern, page, needsLogin] of ROUTES) {
    const m = hash.match(pattern);
    if (!m) continue;
    if (needsLogin && !session.me) { location.hash = "#/login"; return; }
    if (!needsLogin && session.me && page === login) { location.hash = "#/devices"; return; }
    renderChrome();
    clear(main);
    current = page;
    try {
      await page.show(main, ...m.slice(1).map(decodeURIComponent));
    } catch (err) {
      main.append(h("div", { class: "notice notice-error", role: "alert" }, err.message || String(err)));
    }
    return;
  }
  location.hash = session.me ? "#/devices" : "#/login";
}

// --- keyboard shortcuts -------------------------------------------------------------------
let pendingG = 0;
const G_TARGETS = { d: "#/devices", a: "#/alerts", t: "#/tasks", r: "#/grants", l: "#/audit", u: "#/users", m: "#/account" };

function typing(target) {
  return target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)
    || target.dataset.captureKeys === "1");
}

document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target)) return;
  if (ev.key === "/") {
    const search = document.querySelector("[data-search]");
    if (search) { ev.preventDefault(); search.focus(); search.select(); }
  } else if (ev.key === "?") {
    document.getElementById("help").showModal();
  } else if (ev.key === "g") {
    pendingG = Date.now();
  } else if (pendingG && Date.now() - pendingG < 1500 && G_TARGETS[ev.key]) {
    location.hash = G_TARGETS[ev.key];
    pendingG = 0;
  } else if (current && current.key) {
    current.key(ev);
  }
});

api.onUnauthorized(() => {
  if (session.me) toast("Your session ended. Please log in again.", "error");
  session.me = null;
  if (location.hash !== "#/login") location.hash = "#/login";
});

document.getElementById("nav-toggle").addEventListener("click", () => setMenuFolded(!menuFolded()));
window.addEventListener("hashchange", route);
window.addEventListener("helpline:login", () => {
  renderChrome();
  if (location.hash === "#/devices") route(); else location.hash = "#/devices";
});

(async () => {
  try { await loadMe(); } catch (err) { toast(err.message, "error"); }
  await route();
})();
