// My account: my live console sessions (revoke one) and my API tokens (create — shown once — and revoke).
import * as api from "../api.js";
import { badge, clear, fmtTime, h, text, toast, unavailable } from "../dom.js";
import { session } from "../state.js";
import { passkeysCard } from "../passkeys_ui.js";

let boxes = null;

export async function show(main) {
  boxes = { sessions: h("div", { id: "my-sessions" }), tokens: h("div", { id: "my-tokens" }) };
  const me = session.me.user;
  main.append(h("section", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, "My account"), h("span", { class: "muted" }, text(me.username)), badge(me.role)),
    h("section", { class: "card" }, h("h2", {}, "Console sessions"),
      h("p", { class: "muted" }, "Where you are logged in. Revoking a session logs it out at once and closes its remote-session streams."),
      boxes.sessions),
    h("section", { class: "card" }, h("h2", {}, "API tokens"),
      h("p", { class: "muted" }, "For scripts and the CLI viewer: send ", h("code", {}, "Authorization: Bearer hl_…"),
        ". A token acts with your current rights; its value is shown only once."),
      tokenForm(), boxes.tokens),
    passkeysCard()));
  await Promise.all([loadSessions(), loadTokens()]);
}

function tokenForm() {
  const name = h("input", { id: "token-name", required: true, maxlength: "100", placeholder: "label, e.g. nightly report", "aria-label": "Token label" });
  const ttl = h("select", { id: "token-ttl", "aria-label": "Expires" },
    [["", "never expires"], ["86400", "1 day"], ["2592000", "30 days"], ["7776000", "90 days"]].map(([v, l]) => h("option", { value: v, selected: v === "2592000" }, l)));
  const out = h("div", { class: "one-time", id: "new-token", hidden: true });
  return h("form", { class: "inline", id: "token-form", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const res = await api.post("/api/v1/auth/tokens", { name: name.value, ttl_s: ttl.value ? Number(ttl.value) : null });
      const value = h("code", { id: "new-token-value" }, res.token);
      out.replaceChildren(h("strong", {}, "Your new token (shown once — copy it now): "), value, " ",
        h("button", { type: "button", id: "copy-token", onclick: async () => {
          try { await navigator.clipboard.writeText(res.token); toast("Copied."); } catch (err) { toast(`Copy failed: ${err.message}`, "error"); }
        } }, "Copy"),
        h("button", { type: "button", class: "link", onclick: () => { out.hidden = true; clear(out); } }, "Done, hide it"));
      out.hidden = false;
      name.value = "";
      await loadTokens();
    } catch (err) { toast(err.message, "error"); }
  } }, name, ttl, h("button", { type: "submit", class: "primary", id: "token-create" }, "Create token"), out);
}

async function loadSessions() {
  let data;
  try { data = await api.get("/api/v1/auth/sessions"); } catch (err) { clear(boxes.sessions).append(unavailable("Sessions", err)); return; }
  if (!boxes) return;
  const rows = data.items || [];
  clear(boxes.sessions).append(rows.length ? h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, ["Since", "Last active", "From", "Browser", ""].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((s) => h("tr", { dataset: { consoleSession: s.id } },
      h("td", {}, fmtTime(s.created_at)), h("td", {}, fmtTime(s.last_seen)), h("td", { class: "mono" }, text(s.peer)),
      h("td", { class: "ellipsis user-agent" }, text(s.user_agent)),
      h("td", { class: "row-actions" }, s.current ? badge("active", "this session")
        : h("button", { type: "button", class: "danger", onclick: () => revokeSession(s) }, "Revoke"))))))
    : h("p", { class: "muted" }, "No live sessions."));
}

async function revokeSession(s) {
  try {
    await api.post(`/api/v1/auth/sessions/${encodeURIComponent(s.id)}/revoke`);
    toast("Session revoked.");
  } catch (err) { toast(err.message, "error"); }
  await loadSessions();
}

async function loadTokens() {
  let data;
  try { data = await api.get("/api/v1/auth/tokens"); } catch (err) { clear(boxes.tokens).append(unavailable("API tokens", err)); return; }
  if (!boxes) return;
  const now = Date.now() / 1000;
  const rows = data.items || [];
  clear(boxes.tokens).append(rows.length ? h("table", { class: "grid tokens" },
    h("thead", {}, h("tr", {}, ["Label", "State", "Created", "Expires", "Last used", ""].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((t) => {
      const state = t.revoked_at ? "revoked" : t.expires_at && t.expires_at < now ? "expired" : "active";
      return h("tr", { dataset: { token: t.id, name: t.name } },
        h("td", {}, text(t.name)), h("td", {}, badge(state)), h("td", {}, fmtTime(t.created_at)),
        h("td", {}, t.expires_at ? fmtTime(t.expires_at) : "never"), h("td", {}, fmtTime(t.last_used)),
        h("td", { class: "row-actions" }, state === "active"
          ? h("button", { type: "button", class: "danger token-revoke", onclick: () => revokeToken(t) }, "Revoke") : null));
    })))
    : h("p", { class: "muted" }, "No API tokens."));
}

async function revokeToken(t) {
  try {
    await api.post(`/api/v1/auth/tokens/${encodeURIComponent(t.id)}/revoke`);
    toast(`Token "${t.name}" revoked.`);
  } catch (err) { toast(err.message, "error"); }
  await loadTokens();
}

export function leave() { boxes = null; }
