// My passkeys (on My account): register one, read its fingerprint to the administrator, download its
// public key for `helpline trust certify`, revoke. Text nodes only.
import * as api from "./api.js";
import { badge, clear, fmtTime, h, text, toast, unavailable } from "./dom.js";
import { grouped, register } from "./passkeys.js";

/** The "Passkeys" card; reloads its own list. */
export function passkeysCard() {
  const list = h("div", { id: "my-passkeys" });
  const fresh = h("div", { class: "one-time", id: "new-passkey", hidden: true });
  const label = h("input", { id: "passkey-label", required: true, maxlength: "100", placeholder: "label, e.g. work laptop",
    "aria-label": "Passkey label" });
  const button = h("button", { type: "submit", class: "primary", id: "passkey-register" }, "Register a passkey");
  const form = h("form", { class: "inline", id: "passkey-form", onsubmit: async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    try {
      const made = await register(label.value);
      showFingerprint(fresh, made);
      label.value = "";
      await load(list);
    } catch (err) {
      toast(err.name === "NotAllowedError" ? "Passkey registration cancelled." : err.message, "error");
    } finally { button.disabled = false; }
  } }, label, button, fresh);
  const card = h("section", { class: "card", id: "passkeys-card" }, h("h2", {}, "Passkeys"),
    h("p", { class: "muted" }, "A passkey can replace the authenticator code at login, and — once your administrator has ",
      "certified it — approve documents and prove who you are to a device. To have it certified, read its ",
      "fingerprint to the administrator from this screen; they compare it on the offline workstation."),
    form, list);
  load(list);
  return card;
}

function showFingerprint(box, made) {
  const fingerprint = made.localFingerprint || made.passkey.fingerprint;
  box.replaceChildren(...[
    h("strong", {}, "Your new passkey's fingerprint — read it to your administrator: "),
    h("code", { id: "new-passkey-fingerprint", class: "fingerprint" }, grouped(fingerprint)),
    made.matches === false ? h("p", { class: "notice notice-error", role: "alert", id: "passkey-mismatch" },
      "The server recorded another key than your authenticator made. Do not have it certified; revoke it and tell ",
      "your administrator.") : null,
    made.matches ? h("p", { class: "muted" }, "Computed in this browser from your authenticator's answer.") : null,
    h("button", { type: "button", class: "link", onclick: () => { box.hidden = true; clear(box); } }, "Done, hide it"),
  ].filter(Boolean));
  box.hidden = false;
}

async function load(list) {
  let data;
  try { data = await api.get("/api/v1/passkeys"); } catch (err) { clear(list).append(unavailable("Passkeys", err)); return; }
  const rows = data.items || [];
  clear(list).append(rows.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid passkeys" },
    h("thead", {}, h("tr", {}, ["Label", "State", "Fingerprint (SHA-256)", "Id", "Created", "Last used", ""].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((p) => h("tr", { dataset: { passkey: p.id, label: p.label } },
      h("td", {}, text(p.label)), h("td", {}, badge(p.revoked_at ? "revoked" : "active")),
      h("td", { class: "mono fingerprint" }, grouped(p.fingerprint)), h("td", { class: "mono" }, text(p.id)),
      h("td", {}, fmtTime(p.created_at)), h("td", {}, fmtTime(p.last_used)),
      h("td", { class: "row-actions" }, p.revoked_at ? null : [
        h("button", { type: "button", class: "passkey-key", onclick: () => download(p) }, "Public key"),
        h("button", { type: "button", class: "danger passkey-revoke", onclick: () => revoke(p, list) }, "Revoke")]))))),
    h("p", { class: "muted" }, "The administrator certifies it with ", h("code", {},
      "helpline trust certify --kind technician|approver --name \"Your Name\" --cose-key FILE --id ID --days N "
      + "--fingerprint HEX"), ", FILE being the downloaded public key and HEX what you read out."))
    : h("p", { class: "muted" }, "No passkeys yet."));
}

async function download(p) {
  try {
    const key = await api.get(`/api/v1/passkeys/${encodeURIComponent(p.id)}/public-key`);
    const url = URL.createObjectURL(new Blob([JSON.stringify(key, null, 2)], { type: "application/json" }));
    const link = h("a", { href: url, download: `${p.id}.passkey.json`, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (err) { toast(err.message, "error"); }
}

async function revoke(p, list) {
  try {
    await api.del(`/api/v1/passkeys/${encodeURIComponent(p.id)}`);
    toast(`Passkey "${p.label}" revoked. Ask your administrator to add ${p.id} to the revocation list.`);
  } catch (err) { toast(err.message, "error"); }
  await load(list);
}
