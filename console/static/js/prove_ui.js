// Unattended sessions waiting for the technician's proof (device page, "Sessions & grants"): the device
// sent a fresh challenge; "Prove with passkey" signs it (TechnicianStatement) and sends the proof.
import * as api from "./api.js";
import { badge, clear, errorBox, fmtTime, h, text, toast } from "./dom.js";
import { signTechnicianStatement } from "./passkeys.js";
import { session } from "./state.js";

/** A panel per open unattended session of mine in `sessions` (the device's session list). */
export async function proofPanels(sessions, onDone) {
  const me = session.me && session.me.user ? session.me.user.username : null;
  const open = sessions.filter((x) => x.document_id && x.state === "offered" && x.technician === me);
  const panels = [];
  for (const x of open) {
    let live;
    try { live = await api.get(`/api/v1/sessions/${encodeURIComponent(x.session_id)}`); } catch { continue; }
    panels.push(panel(live, onDone));
  }
  return panels.length ? h("div", { id: "unattended-proofs" }, panels) : null;
}

function panel(live, onDone) {
  const box = h("div", { class: "notice notice-muted unattended", dataset: { proveSession: live.session_id } });
  const c = live.challenge;
  if (!c) {
    box.append(h("strong", {}, `Unattended session under ${text(live.document_id)}: `),
      live.state === "offered" ? "waiting for the device's challenge… " : badge(live.state),
      h("button", { type: "button", class: "link", onclick: onDone }, "Refresh"));
    return box;
  }
  const button = h("button", { type: "button", class: "primary prove-passkey", onclick: async () => {
    button.disabled = true;
    try {
      const proof = await signTechnicianStatement(c);
      const after = await api.post(`/api/v1/sessions/${encodeURIComponent(live.session_id)}/proof`, proof);
      const accepted = after.state === "consented" || after.state === "streaming";
      toast(accepted ? "Proof sent; the device accepted it."
        : after.state === "offered" ? "Proof sent; waiting for the device's answer."
          : `The device refused: ${after.end_reason || after.state}`, accepted || after.state === "offered" ? "info" : "error");
      onDone();
    } catch (err) {
      clear(result).append(errorBox(err.name === "NotAllowedError" ? new Error("Passkey cancelled.") : err));
      button.disabled = false;
    }
  } }, "Prove with passkey");
  const result = h("div");
  box.append(h("strong", {}, "Unattended session waits for your proof"),
    h("dl", { class: "kv" },
      h("dt", {}, "Device"), h("dd", { class: "mono" }, text(c.device_id)),
      h("dt", {}, "Action"), h("dd", {}, text(c.action)),
      h("dt", {}, "Grant document"), h("dd", { class: "mono" }, text(c.document_id)),
      h("dt", {}, "Challenge expires"), h("dd", {}, fmtTime(c.expires_at))),
    button, result);
  return box;
}
