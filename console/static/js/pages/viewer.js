// Remote session viewer: consent state, canvas, fit/1:1, monitor switch, input capture, fps/latency, end.
// A session live on another node (issue 20): every call still goes to this console (it forwards them), only the
// stream opens on that node, with a ticket (streamUrl).
// The device's pointer is a small sprite canvas over the screen (its shape from CURSOR_SHAPE, else an arrow).
// Screen updates are decoded by ../screen.js (shared with the recording player).
// Under the screen: the session's notes (its technician or an admin may edit; saved on blur or Ctrl+S) and its
// tickets with their write-back status (./tickets.js).
// Beside the screen: the toolkit (chat, files, clipboard; ../toolkit.js) within what the device allows.
import * as api from "../api.js";
import { badge, fmtTime, h, toast } from "../dom.js";
import { FLAG_END_OF_FRAME, KIND_CURSOR_SHAPE, cursorShape, defaultArrow, drawRecords, ensureSize, parseRecords } from "../screen.js";
import { can, session } from "../state.js";
import { panel as proofPanel } from "../prove_ui.js";
import { toolkitPanel } from "../toolkit.js";
import { shellTab } from "../shell.js";
import { peoplePanel } from "../people.js";
import { ticketStatus } from "./tickets.js";

const MAX_NOTES = 8000;
const STATE_TEXT = {
  offered: ["waiting", "Waiting for the user to answer the consent prompt…"],
  consented: ["consented", "The user consented. Connecting…"],
  streaming: ["streaming", "Connected."],
  denied: ["denied", "The user declined."],
  timed_out: ["denied", "The user did not answer in time."],
  ended: ["ended", "Session ended."],
};

let ctx = null;  // per-page state, reset on leave()

export async function show(main, sessionId) {
  const banner = h("div", { class: "consent consent-waiting", id: "consent-banner", role: "status" }, "Loading session…");
  const canvas = h("canvas", { id: "screen", class: "screen fit", tabindex: "0", width: 16, height: 9,
    "aria-label": "Remote screen", dataset: { captureKeys: "0" } });
  // The stream's figures under the screen, not over it: nothing of the device's screen is hidden.
  const overlay = h("div", { class: "viewer-stats", id: "viewer-stats", "aria-label": "Stream statistics" }, "—");
  const sprite = h("canvas", { class: "remote-cursor", id: "remote-cursor", hidden: true, "aria-hidden": "true" });
  const monitors = h("select", { id: "monitor-select", "aria-label": "Monitor", disabled: true,
    onchange: (ev) => send({ type: "monitor.select", index: Number(ev.target.value) }) });
  const scaleBtn = h("button", { type: "button", id: "scale-toggle", onclick: toggleScale }, "1:1");
  const controlBtn = h("button", { type: "button", id: "request-control", hidden: true, onclick: requestControl },
    "Ask for control");
  const endBtn = h("button", { type: "button", class: "danger", id: "end-session", onclick: end }, "End session");
  const notes = notesPanel(sessionId);
  const tools = toolkitPanel(send, sendBinary);
  const shell = shellTab(sessionId, send, sendBinary);
  const me = session.me && session.me.user ? session.me.user.username : "";
  const people = peoplePanel(sessionId, me, () => refreshState());
  tools.box.prepend(people.box);  // the People box heads the toolkit column (join and hand-off)
  // Tabs: the screen (with the toolkit beside it) or the remote shell (../shell.js).
  const screenTabBtn = h("button", { type: "button", id: "tab-screen", "aria-selected": "true", onclick: () => showTab("screen") },
    "Screen");
  const shellTabBtn = h("button", { type: "button", id: "tab-shell", "aria-selected": "false", onclick: () => showTab("shell") }, "Shell");
  const notesBtn = h("button", { type: "button", id: "notes-jump", onclick: () => notes.area.focus() }, "Notes");
  // Unattended: the device's challenge (to start, or to switch to control) and my passkey's answer.
  const proofSlot = h("div", { id: "viewer-proof" });
  main.append(h("section", { class: "page viewer-page" },
    h("div", { class: "viewer-bar" }, h("a", { href: "#/devices" }, "← Devices"), banner, monitors, scaleBtn, controlBtn,
      notesBtn, endBtn),
    proofSlot, h("nav", { class: "tabs", "aria-label": "Session tools" }, screenTabBtn, shellTabBtn),
    h("div", { class: "viewer-main", id: "viewer-main" },
      h("div", { class: "screen-col" }, h("div", { class: "screen-wrap" }, canvas, sprite), overlay), tools.box),
    shell.box, notes.box,
    // The tickets this session writes back to, and how that went (written when the session ends: Refresh).
    ticketStatus(`/api/v1/sessions/${encodeURIComponent(sessionId)}/tickets`, "viewer-tickets")));
  ctx = { sessionId, banner, controlBtn, canvas, proofSlot, overlay, monitors, scaleBtn, g: canvas.getContext("2d"), ws: null, poll: 0,
    chain: Promise.resolve(), frames: [], bytes: 0, lastStats: null, mode: null, consented: null, state: null,
    cursor: null, size: [0, 0], fit: true, closed: false, sprite, shape: null, shapes: 0,
    resizeObserver: new ResizeObserver(placeCursor), notes, tools, shell, people, tabs: { screen: screenTabBtn, shell: shellTabBtn } };
  setShape(defaultArrow());
  ctx.resizeObserver.observe(canvas);
  bindInput(canvas);
  api.get(`/api/v1/sessions/${encodeURIComponent(sessionId)}/chat`)
    .then((t) => { if (ctx && ctx.tools === tools) tools.loadTranscript(t.chat || []); })
    .catch(() => {});  // no transcript (older server, no right): the live chat still shows
  await refreshState();
  ctx.poll = setInterval(refreshState, 1000);
  ctx.statsTimer = setInterval(drawStats, 500);
}

function showTab(name) {
  if (!ctx) return;
  document.getElementById("viewer-main").hidden = name !== "screen";
  ctx.shell.show(name === "shell");
  for (const [tab, btn] of Object.entries(ctx.tabs)) btn.setAttribute("aria-selected", String(tab === name));
}

async function refreshState() {
  if (!ctx) return;
  let s;
  try {
    s = await api.get(`/api/v1/sessions/${encodeURIComponent(ctx.sessionId)}`);
  } catch (err) {
    setBanner("ended", err.status === 404 ? "Remote sessions are not available (or this session does not exist)."
      : err.message);
    clearInterval(ctx.poll);
    return;
  }
  if (!ctx) return;
  if (!ctx.notes.loaded) loadNotes(s);
  ctx.state = s.state;
  ctx.nodeUrl = s.node_url || null;  // live on another node: the stream opens there (streamUrl)
  ctx.mode = s.requested_mode || s.mode;
  const live = s.state === "consented" || s.state === "streaming";
  ctx.consented = live ? s.mode : null;
  const [cls, msg] = STATE_TEXT[s.state] || ["waiting", `State: ${s.state}`];
  const who = s.answered_by ? ` (answered by ${s.answered_by})` : "";
  let detail = msg;
  const unattended = Boolean(s.document_id);
  ctx.unattended = unattended;
  const allowedBy = unattended && s.answered_by === "grant" ? `Grant ${s.document_id} and your proof allowed` : "User allowed";
  if (s.state === "offered") {
    detail = unattended ? `Unattended under grant ${s.document_id}: the device waits for your proof.`
      : `${msg} You asked to ${ctx.mode === "control" ? "CONTROL" : "VIEW"}.`;
  }
  if (live) {
    detail = ctx.consented === "control" ? `${allowedBy} CONTROL${who} — your mouse and keyboard reach the device.`
      : `${allowedBy} VIEW ONLY${who} — your input is not sent.`;
    if (s.pending_mode) {
      detail += unattended ? ` The device waits for your proof to allow ${s.pending_mode.toUpperCase()}…`
        : ` Waiting for the user to allow ${s.pending_mode.toUpperCase()}…`;
    }
  }
  showProof(s);
  if (s.state === "ended" && s.end_reason) detail = `Session ended: ${s.end_reason}${s.ended_by ? ` (by ${s.ended_by})` : ""}.`;
  setBanner(ctx.consented === "control" ? "control" : cls, detail);
  ctx.banner.dataset.state = s.state;
  ctx.banner.dataset.mode = ctx.consented || "";
  ctx.controlBtn.hidden = !(live && ctx.consented === "view" && !s.pending_mode && can("remote_control", s.group));
  if (live) await ctx.people.refresh();
  if (!ctx) return;
  ctx.canvas.dataset.captureKeys = ctx.consented === "control" && ctx.people.controls() ? "1" : "0";
  if (["consented", "streaming"].includes(s.state) && !ctx.ws && ctx.people.admitted()) connect();
  if (["denied", "timed_out", "ended"].includes(s.state)) {
    clearInterval(ctx.poll);
    if (ctx.ws) ctx.ws.close();
  }
}

/** The passkey prompt while the device's challenge is open (once per nonce; gone when it is answered). */
function showProof(s) {
  const me = session.me && session.me.user ? session.me.user.username : null;
  // The requester's challenge, or a joiner's (join and hand-off): only the one it is for sees the passkey prompt.
  const c = s.challenge && (s.challenge.for || s.technician) === me ? s.challenge : null;
  if (!c) { ctx.proofSlot.replaceChildren(); delete ctx.proofSlot.dataset.nonce; return; }
  if (ctx.proofSlot.dataset.nonce === c.nonce) return;
  ctx.proofSlot.dataset.nonce = c.nonce;
  ctx.proofSlot.replaceChildren(proofPanel(s, refreshState));
}

function setBanner(cls, message) {
  ctx.banner.className = `consent consent-${cls}`;
  ctx.banner.replaceChildren(badge(cls, cls.replace("_", " ")), " ", message);
  ctx.banner.title = message;  // the bar stays one line (the screen must not move under the mouse): all of it here
}

/**
 * Where the stream opens: this console's own host, or — the session live on another node (``node_url``) — that
 * node, with a single-use ticket minted here (this page's cookie belongs to this host only; the other node
 * checks the ticket and that this page's origin is one of the nodes').
 */
async function streamUrl() {
  const id = encodeURIComponent(ctx.sessionId);
  const url = !ctx.nodeUrl || new URL(ctx.nodeUrl).origin === location.origin
    ? new URL(`wss://${location.host}/api/v1/sessions/${id}/stream`)
    : new URL((await api.post(`/api/v1/sessions/${id}/stream-ticket`)).url);
  url.searchParams.set("batched", "1");  // this page reads batched updates (screen.js parseRecords)
  return url.href;
}

async function connect() {
  const mine = ctx;
  if (mine.connecting) return;
  mine.connecting = true;
  let url;
  try {
    url = await streamUrl();
  } catch (err) {
    toast(`Stream: ${err.message}`, "error");
    return;
  } finally {
    mine.connecting = false;
  }
  if (ctx !== mine || ctx.ws) return;
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ctx.ws = ws;
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") onText(ev.data);
    else if (ctx.tools.onBinary(ev.data)) return;  // a file chunk, not a screen update
    else if (ctx.shell.onBinary(ev.data)) return;  // terminal output of the remote shell
    else ctx.chain = ctx.chain.then(() => onBinary(ev.data)).catch((err) => console.error("update failed", err));
  };
  ws.onclose = (ev) => {
    if (!ctx || ctx.ws !== ws) return;
    ctx.ws = null;
    if (ev.code === 4401) setBanner("ended", "Your console session ended; log in again.");
    else if (ctx.state !== "ended") refreshState();
  };
}

function send(message) {
  if (ctx && ctx.ws && ctx.ws.readyState === WebSocket.OPEN) ctx.ws.send(JSON.stringify(message));
}

function sendBinary(buf) {
  if (ctx && ctx.ws && ctx.ws.readyState === WebSocket.OPEN) ctx.ws.send(buf);
}

function onText(data) {
  let msg;
  try { msg = JSON.parse(data); } catch { return; }
  if (typeof msg.type === "string" && msg.type.startsWith("shell.")) {
    ctx.shell.onText(msg);
    return;
  }
  if (typeof msg.type === "string" && /^(toolkit|chat|file|clip)\./.test(msg.type)) {
    ctx.tools.onText(msg).catch((err) => console.error("toolkit message failed", err));
    return;
  }
  if (msg.type === "monitors") {
    ctx.monitors.replaceChildren(...msg.monitors.map((m, i) => h("option", { value: i, selected: i === msg.selected },
      i === 0 && msg.monitors.length > 1 ? `All monitors (${m.w}×${m.h})` : `Monitor ${i} (${m.w}×${m.h})${m.primary ? " primary" : ""}`)));
    ctx.monitors.disabled = msg.monitors.length < 2;
    const m = msg.monitors[msg.selected];
    if (m) resize(m.w, m.h);
  } else if (msg.type === "cursor") {
    ctx.cursor = msg;
    placeCursor();
  } else if (msg.type === "stats") {
    ctx.lastStats = msg;
  } else if (msg.type === "error") {
    // Wayland: the desktop granted no remote input (its dialog's "Allow remote interaction" was off).
    if (msg.code === "input_not_granted") ctx.inputNote = "view-only: input not granted";
    toast(`${msg.code}: ${msg.message || ""}`, "error");
  }
}

function resize(w, h2) {
  if (ctx.size[0] === w && ctx.size[1] === h2) return;
  ctx.size = [w, h2];
  ctx.canvas.width = w;
  ctx.canvas.height = h2;
}

async function onBinary(buf) {
  if (!ctx) return;
  const records = parseRecords(buf);
  if (!records) return;
  const u = records[0];
  if (u.kind === KIND_CURSOR_SHAPE) {  // alone, and not part of an update: never acked
    const shape = cursorShape(u);
    if (shape) { ctx.shapes += 1; setShape(shape); }
    return;
  }
  ctx.bytes += buf.byteLength;
  for (const r of records) ensureSize(ctx.canvas, r);
  ctx.size = [ctx.canvas.width, ctx.canvas.height];
  await drawRecords(ctx.g, records);
  const last = records[records.length - 1];
  if (last.flags & FLAG_END_OF_FRAME) {
    ctx.frames.push(performance.now());
    send({ type: "ack", seq: last.seq });
  }
}

function setShape(shape) {
  const s = ctx.sprite;
  s.width = shape.w;
  s.height = shape.h;
  s.getContext("2d").putImageData(shape.image, 0, 0);
  s.dataset.shape = `${shape.w}x${shape.h}@${shape.hotX},${shape.hotY}`;
  s.dataset.shapes = String(ctx.shapes);
  ctx.shape = shape;
  placeCursor();
}

/** Put the sprite's hotspot over the device pointer, scaled like the screen canvas. */
function placeCursor() {
  if (!ctx) return;
  const c = ctx.cursor, s = ctx.sprite, shape = ctx.shape;
  if (!c || !shape || !c.visible || !ctx.canvas.width) { s.hidden = true; return; }
  const wrap = s.parentElement;
  const r = ctx.canvas.getBoundingClientRect(), wr = wrap.getBoundingClientRect();
  const scale = r.width / ctx.canvas.width;
  s.style.left = `${r.left - wr.left - wrap.clientLeft + wrap.scrollLeft + (c.x - shape.hotX) * scale}px`;
  s.style.top = `${r.top - wr.top - wrap.clientTop + wrap.scrollTop + (c.y - shape.hotY) * scale}px`;
  s.style.width = `${shape.w * scale}px`;
  s.style.height = `${shape.h * scale}px`;
  s.hidden = false;
}

function drawStats() {
  if (!ctx) return;
  const now = performance.now();
  ctx.frames = ctx.frames.filter((t) => now - t < 2000);
  const fps = ctx.frames.length / 2;
  const kbps = (ctx.bytes * 8) / 1000 / 0.5;
  ctx.bytes = 0;
  const s = ctx.lastStats;
  ctx.overlay.textContent = `${fps.toFixed(1)} fps · ${kbps.toFixed(0)} kbit/s`
    + (s ? ` · rtt ${Number(s.rtt_ms).toFixed(0)} ms · q ${s.quality} · in flight ${s.in_flight}` : "")
    + (s && s.backend ? ` · ${s.backend}` : "")
    + (ctx.inputNote ? ` · ${ctx.inputNote}` : "")
    + ` · ${ctx.size[0]}×${ctx.size[1]}`;
}

function toggleScale() {
  ctx.fit = !ctx.fit;
  ctx.canvas.classList.toggle("fit", ctx.fit);
  ctx.scaleBtn.textContent = ctx.fit ? "1:1" : "Fit";
  placeCursor();
}

function point(ev) {
  const r = ctx.canvas.getBoundingClientRect();
  const x = Math.round(((ev.clientX - r.left) / r.width) * ctx.canvas.width);
  const y = Math.round(((ev.clientY - r.top) / r.height) * ctx.canvas.height);
  return { x: Math.max(0, Math.min(ctx.canvas.width - 1, x)), y: Math.max(0, Math.min(ctx.canvas.height - 1, y)) };
}

function control() { return ctx && ctx.consented === "control" && ctx.ws; }

function bindInput(canvas) {
  let pendingMove = null;
  canvas.addEventListener("mousemove", (ev) => {
    if (!control()) return;
    const first = pendingMove === null;
    pendingMove = point(ev);
    if (first) requestAnimationFrame(() => { if (pendingMove) send({ type: "input.mouse", action: "move", ...pendingMove }); pendingMove = null; });
  });
  canvas.addEventListener("mousedown", (ev) => {
    canvas.focus({ preventScroll: true });  // the screen must not scroll away under the click that focused it
    if (!control()) return;
    ev.preventDefault();
    send({ type: "input.mouse", action: "move", ...point(ev) });
    send({ type: "input.mouse", action: "down", button: ev.button, ...point(ev) });
  });
  canvas.addEventListener("mouseup", (ev) => {
    if (!control()) return;
    ev.preventDefault();
    send({ type: "input.mouse", action: "up", button: ev.button, ...point(ev) });
  });
  canvas.addEventListener("contextmenu", (ev) => { if (control()) ev.preventDefault(); });
  canvas.addEventListener("wheel", (ev) => {
    if (!control()) return;
    ev.preventDefault();
    send({ type: "input.mouse", action: "wheel", dx: Math.sign(ev.deltaX), dy: Math.sign(ev.deltaY), ...point(ev) });
  }, { passive: false });
  for (const type of ["keydown", "keyup"]) {
    canvas.addEventListener(type, (ev) => {
      if (!control()) { if (ev.key === "f" && type === "keydown") toggleScale(); return; }
      if (!/^[A-Za-z0-9]+$/.test(ev.code)) return;
      ev.preventDefault();
      ev.stopPropagation();
      send({ type: "input.key", code: ev.code, action: type === "keydown" ? "down" : "up" });
    });
  }
}

async function requestControl() {
  try {
    await api.post(`/api/v1/sessions/${encodeURIComponent(ctx.sessionId)}/mode`, { mode: "control" });
    toast(ctx.unattended ? "Asked the device; prove it with your passkey." : "Asked the user to allow control.");
    refreshState();
  } catch (err) { toast(err.message, "error"); }
}

async function end() {
  try {
    await api.post(`/api/v1/sessions/${encodeURIComponent(ctx.sessionId)}/end`);
    setBanner("ended", "Session ended.");
  } catch (err) { toast(err.message, "error"); }
  if (ctx.ws) ctx.ws.close();
}

// --- notes -------------------------------------------------------------------------------

function notesPanel(sessionId) {
  const area = h("textarea", { id: "session-notes", rows: "5", maxlength: String(MAX_NOTES), disabled: true,
    placeholder: "What you did, ticket number… (saved when you leave the box, or with Ctrl+S)",
    "aria-label": "Session notes" });
  Object.assign(area.style, { width: "100%", boxSizing: "border-box", font: "inherit" });
  const status = h("span", { id: "notes-status", class: "muted", role: "status", dataset: { state: "loading" } }, "Loading…");
  const count = h("span", { id: "notes-count", class: "muted" }, "");
  const panel = { sessionId, area, status, count, saved: "", loaded: false, chain: Promise.resolve(), box: null };
  panel.box = h("section", { class: "card", id: "notes-panel" },
    h("h2", {}, h("label", { for: "session-notes" }, "Session notes")), area, h("div", {}, status, " ", count));
  area.addEventListener("input", () => {
    setNotesStatus(panel, area.value === panel.saved ? "saved" : "dirty",
      area.value === panel.saved ? "Saved." : "Unsaved changes.");
  });
  area.addEventListener("blur", () => saveNotes(panel));
  area.addEventListener("keydown", (ev) => {
    if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "s") {
      ev.preventDefault();
      saveNotes(panel, true);
    }
  });
  return panel;
}

function setNotesStatus(panel, state, message) {
  panel.status.dataset.state = state;
  panel.status.textContent = message;
  panel.count.textContent = `${panel.area.value.length} / ${MAX_NOTES}`;
}

/** Fill the box once from the session (later polls never overwrite what is being typed). */
function loadNotes(s) {
  const panel = ctx.notes;
  panel.loaded = true;
  const me = session.me || {};
  const mine = (me.user && me.user.username === s.technician) || Boolean(me.is_admin);
  panel.saved = (s.notes && s.notes.text) || "";
  panel.area.value = panel.saved;
  panel.area.disabled = false;
  panel.area.readOnly = !mine;
  if (!mine) setNotesStatus(panel, "readonly", "Only the session's technician or an admin may edit these notes.");
  else if (s.notes) setNotesStatus(panel, "saved", `Saved by ${s.notes.author}, ${fmtTime(s.notes.updated_at)}.`);
  else setNotesStatus(panel, "empty", "No notes yet.");
}

/** Save the notes if they changed (saves run one after another, so the last text written wins). */
function saveNotes(panel, always = false) {
  if (!panel.loaded || panel.area.readOnly) return panel.chain;
  panel.chain = panel.chain.then(async () => {
    const text = panel.area.value;
    if (text === panel.saved) {
      if (always) setNotesStatus(panel, "saved", "Saved.");
      return;
    }
    setNotesStatus(panel, "saving", "Saving…");
    try {
      const res = await api.put(`/api/v1/sessions/${encodeURIComponent(panel.sessionId)}/notes`, { text });
      panel.saved = res.notes.text;
      setNotesStatus(panel, panel.area.value === panel.saved ? "saved" : "dirty",
        panel.area.value === panel.saved ? `Saved ${fmtTime(res.notes.updated_at)}.` : "Unsaved changes.");
    } catch (err) {
      setNotesStatus(panel, "error", `Not saved: ${err.message}`);
      toast(`Notes not saved: ${err.message}`, "error");
    }
  });
  return panel.chain;
}

export function key(ev) {
  if (ev.key === "f") toggleScale();
}

export function leave() {
  if (!ctx) return;
  saveNotes(ctx.notes);  // leaving the page with unsaved notes still saves them
  clearInterval(ctx.poll);
  clearInterval(ctx.statsTimer);
  ctx.resizeObserver.disconnect();
  ctx.shell.leave();
  if (ctx.ws) { const ws = ctx.ws; ctx.ws = null; ws.close(); }
  ctx = null;
}

