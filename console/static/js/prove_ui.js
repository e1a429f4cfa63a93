// Unattended sessions waiting for the technician's proof (device page, "Sessions & grants", and the viewer): the
// device sent a fresh challenge — to start the session, or to let a running one switch to control —;
// "Prove with passkey" signs it (TechnicianStatement) and sends the proof.
import * as api from "./api.js";
import { badge, clear, errorBox, fmtTime, h, text, toast } from "./dom.js";
import { signTechnicianStatement } from "./passkeys.js";
import { session } from "./state.js";

/** A panel per open unattended session of mine in `sessions` (the device's session list). */
export async function proofPanels(sessions, onDone) {
  const me = session.me && session.me.user ? session.me.user.username : null;
  const open = sessions.filter((x) => x.document_id && x.technician === me
    && (x.state === "offered" || (x.state === "streaming" && x.pending_mode)));
  const panels = [];
  for (const x of open) {
    let live;
    try { live = await api.get(`/api/v1/sessions/${encodeURIComponent(x.session_id)}`); } catch { continue; }
    panels.push(panel(live, onDone));
  }
  return panels.length ? h("div", { id: "unattended-proofs" }, panels) : null;
}

/** Did the device take the proof? A new session consented, or the mode the upgrade asked for is on. */
function outcome(live, after) {
  const upgrade = live.state === "streaming";
  if (upgrade ? after.mode === live.challenge.action : ["consented", "streaming"].includes(after.state)) {
    return ["accepted", "Proof sent; the device accepted it."];
  }
  if (upgrade ? after.pending_mode : after.state === "offered") return ["waiting", "Proof sent; waiting for the device's answer."];
  return ["refused", `The device refused: ${after.end_reason || (upgrade ? "control not allowed" : after.state)}`];
}

/** The proof box of one session whose device waits for my signature (`live` = GET /sessions/{id}). */
export function panel(live, onDone) {
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
      const [how, message] = outcome(live, after);
      toast(message, how === "refused" ? "error" : "info");
      onDone();
    } catch (err) {
      clear(result).append(errorBox(err.name === "NotAllowedError" ? new Error("Passkey cancelled.") : err));
      button.disabled = false;
    }
  } }, "Prove with passkey");
  const result = h("div");
  box.append(h("strong", {}, live.state === "streaming" ? `Switching to ${text(c.action)} waits for your proof`
    : "Unattended session waits for your proof"),
    h("dl", { class: "kv" },
      h("dt", {}, "Device"), h("dd", { class: "mono" }, text(c.device_id)),
      h("dt", {}, "Action"), h("dd", {}, text(c.action)),
      h("dt", {}, "Grant document"), h("dd", { class: "mono" }, text(c.document_id)),
      h("dt", {}, "Challenge expires"), h("dd", {}, fmtTime(c.expires_at))),
    button, result);
  return box;
}
