// The "People" box of a running session (join and hand-off, issue 16): who is in, who controls, who is
// invited, asks or is being asked on the device; Invite (controller), Hand control (controller, per viewer),
// Ask to join (a technician not in yet), Leave. Names are shown as text (textContent), never markup.
import * as api from "./api.js";
import { h, toast } from "./dom.js";

/** ``me`` is the caller's username; ``onChange()`` runs after every change the caller made. */
export function peoplePanel(sessionId, me, onChange) {
  const base = `/api/v1/sessions/${encodeURIComponent(sessionId)}`;
  const status = h("p", { id: "people-status", class: "muted", role: "status" }, "…");
  const list = h("ul", { id: "people-list", class: "people" });
  const pick = h("select", { id: "people-invite-pick", "aria-label": "Technician to invite" });
  const inviteBtn = h("button", { type: "button", id: "people-invite", onclick: invite }, "Invite");
  const inviteRow = h("div", { class: "row", id: "people-invite-row", hidden: true }, pick, inviteBtn);
  const joinBtn = h("button", { type: "button", id: "people-join", hidden: true, onclick: join }, "Ask to join");
  const leaveBtn = h("button", { type: "button", id: "people-leave", hidden: true, onclick: leave }, "Leave");
  const box = h("section", { class: "toolkit-people", id: "people" }, h("h4", {}, "People"), status, list, inviteRow,
    h("div", { class: "row" }, joinBtn, leaveBtn));
  let last = null;

  async function act(what, path, body) {
    try {
      last = { ...(await api.post(`${base}/${path}`, body)) };
      render();
      onChange();
      return true;
    } catch (err) {
      toast(`${what}: ${err.message}`, "error");
      return false;
    }
  }

  async function invite() {
    if (pick.value) await act("Invite", "invite", { technician: pick.value });
  }

  async function join() {
    joinBtn.disabled = true;
    status.textContent = "Asking… the controlling technician invites you, then the person at the device decides.";
    await act("Join", "join", {});
    joinBtn.disabled = false;
  }

  async function leave() { await act("Leave", "leave"); }

  async function hand(to) { await act("Hand control", "hand", { technician: to }); }

  function render() {
    if (!last) return;
    const controller = last.controller;
    const inside = last.viewers.includes(me);
    list.replaceChildren(...last.viewers.map((name) => h("li", { dataset: { name } },
      h("span", { class: "people-name" }, name), name === controller ? " (controls)" : " (watches)",
      controller === me && name !== me ? h("button", { type: "button", class: "people-hand",
        "aria-label": `Hand control to ${name}`, onclick: () => hand(name) }, "Hand control") : "")));
    for (const [names, label] of [[last.joining, "the device is asked about"], [last.invited, "invited"],
      [last.asking, "asks to join"]]) {
      for (const name of names || []) list.append(h("li", { class: "muted", dataset: { name } }, `${name} — ${label}`));
    }
    status.textContent = controller ? `${controller} controls.` : "Nobody controls: everyone watches.";
    const candidates = (last.candidates || []).concat((last.asking || []).filter((n) => !(last.candidates || []).includes(n)));
    const keep = pick.value;
    pick.replaceChildren(...candidates.map((name) => h("option", { value: name, selected: name === keep }, name)));
    inviteRow.hidden = controller !== me || candidates.length === 0;
    joinBtn.hidden = inside || (last.joining || []).includes(me);
    leaveBtn.hidden = !inside;
  }

  async function refresh() {
    try {
      last = await api.get(`${base}/people`);
    } catch (err) {
      last = null;
      status.textContent = err.status === 409 ? "The session has ended." : `People: ${err.message}`;
      joinBtn.hidden = leaveBtn.hidden = inviteRow.hidden = true;
      return null;
    }
    render();
    return last;
  }

  return {
    box,
    refresh,
    /** Am I admitted (may open the stream)? Unknown (older server): yes. */
    admitted: () => !last || last.viewers.includes(me),
    controls: () => !last || last.controller === me,
  };
}
