// Recording player: replays a recorded session stream (server/sessions relay recorder, "hlrec1")
// onto a canvas with play/pause, speed and a time scrubber. Decoding is the live viewer's (../screen.js).
// Record layout: >dBBI header (seconds since start, direction 0 = agent→technician, binary flag,
// length) + payload. Only the agent's side is drawn; the technician's input is not replayed.
import * as api from "../api.js";
import { badge, errorBox, fmtBytes, fmtTime, h, text } from "../dom.js";
import { HEADER, KIND_CURSOR_SHAPE, drawRecords, endsUpdate, ensureSize, parseRecords } from "../screen.js";
import { duration } from "../tasks_ui.js";

const RECORD_HEADER = 14;
let ctx = null;

export function parseRecording(buf) {
  const v = new DataView(buf);
  const records = [];
  const decoder = new TextDecoder();
  let off = 0;
  while (off + RECORD_HEADER <= buf.byteLength) {
    const t = v.getFloat64(off), dir = v.getUint8(off + 8), binary = v.getUint8(off + 9), len = v.getUint32(off + 10);
    const start = off + RECORD_HEADER;
    if (start + len > buf.byteLength) break;  // a recording cut off mid-record (session still running)
    off = start + len;
    if (dir !== 0) continue;
    if (binary) { if (len >= HEADER) records.push({ t, data: buf.slice(start, start + len) }); }
    else {
      try { records.push({ t, msg: JSON.parse(decoder.decode(new Uint8Array(buf, start, len))) }); } catch { /* not JSON: skip */ }
    }
  }
  return records;
}

export async function show(main, sessionId) {
  const status = h("span", { id: "player-status", class: "muted" }, "Loading recording…");
  const info = h("div", { id: "player-info" });
  const canvas = h("canvas", { id: "player-screen", class: "screen fit", width: 16, height: 9, "aria-label": "Recorded screen",
    dataset: { frames: "0" } });
  const play = h("button", { type: "button", id: "player-play", class: "primary", disabled: true, onclick: toggle }, "▶ Play");
  const scrub = h("input", { type: "range", id: "player-scrub", min: "0", max: "0", step: "0.01", value: "0", disabled: true,
    "aria-label": "Position", oninput: (ev) => {
      if (ctx && !ctx.playing) ctx.status.textContent = "Paused.";
      seek(Number(ev.target.value));
    } });
  const time = h("span", { id: "player-time", class: "mono" }, "0:00 / 0:00");
  const speed = h("select", { id: "player-speed", "aria-label": "Speed", onchange: (ev) => setSpeed(Number(ev.target.value)) },
    [1, 2, 4, 8].map((s) => h("option", { value: String(s) }, `${s}×`)));
  main.append(h("section", { class: "page viewer-page player-page" },
    h("div", { class: "viewer-bar" }, h("a", { href: "#/devices" }, "← Devices"), h("strong", {}, "Recording"), status),
    info,
    h("div", { class: "player-controls" }, play, scrub, time, speed),
    h("div", { class: "screen-wrap" }, canvas)));
  ctx = { canvas, g: canvas.getContext("2d"), play, scrub, time, status, records: [], idx: 0, pos: 0, length: 0, t0: 0,
    playing: false, speed: 1, baseWall: 0, basePos: 0, pump: Promise.resolve(), raf: 0, frames: 0 };
  const mine = ctx;
  let meta;
  try {
    meta = await api.get(`/api/v1/sessions/${encodeURIComponent(sessionId)}/recording`);
  } catch (err) {
    status.replaceWith(errorBox(err));
    return;
  }
  info.append(h("dl", { class: "summary" },
    h("dt", {}, "Device"), h("dd", { class: "mono" }, h("a", { href: `#/devices/${encodeURIComponent(meta.device_id)}` }, text(meta.device_id))),
    h("dt", {}, "Technician"), h("dd", {}, text(meta.technician)),
    h("dt", {}, "Mode"), h("dd", {}, meta.mode ? badge(meta.mode) : "—", meta.answered_by ? ` consent: ${meta.answered_by}` : ""),
    h("dt", {}, "Session"), h("dd", {}, `${fmtTime(meta.started_at)} · ${duration(meta.started_at, meta.ended_at)}`),
    h("dt", {}, "Ended"), h("dd", {}, text(meta.end_reason))));
  let buf;
  try {
    const resp = await fetch(meta.data_url, { credentials: "same-origin", cache: "no-store" });
    if (!resp.ok) throw new Error(`recording: ${resp.status} ${resp.statusText}`);
    buf = await resp.arrayBuffer();
  } catch (err) {
    status.replaceWith(errorBox(err));
    return;
  }
  if (ctx !== mine) return;
  ctx.records = parseRecording(buf);
  if (!ctx.records.length) { status.textContent = "The recording holds no screen data."; return; }
  // Position 0 = the first complete screen (its END_OF_FRAME rectangle), not a black canvas.
  const first = ctx.records.find((r) => r.data && endsUpdate(r.data)) || ctx.records[0];
  ctx.t0 = first.t;
  ctx.length = Math.max(0, ctx.records[ctx.records.length - 1].t - ctx.t0);
  scrub.max = String(ctx.length);
  scrub.disabled = false;
  play.disabled = false;
  status.textContent = `${fmtBytes(buf.byteLength)}, ${ctx.records.length} messages${meta.complete ? "" : " (still recording)"}`;
  await seek(0);  // first screen state
}

function clock(s) {
  const m = Math.floor(s / 60);
  return `${m}:${(s % 60).toFixed(1).padStart(4, "0")}`;
}

async function apply(rec) {
  if (rec.msg) {
    const m = rec.msg;
    if (m.type === "monitors" && Array.isArray(m.monitors) && m.monitors[m.selected]) {
      const mon = m.monitors[m.selected];
      if (ctx.canvas.width !== mon.w || ctx.canvas.height !== mon.h) { ctx.canvas.width = mon.w; ctx.canvas.height = mon.h; }
    }
    return;
  }
  const records = parseRecords(rec.data);
  if (!records || records[0].kind === KIND_CURSOR_SHAPE) return;
  for (const u of records) ensureSize(ctx.canvas, u);
  await drawRecords(ctx.g, records);
  ctx.frames += records.length;
  ctx.canvas.dataset.frames = String(ctx.frames);
}

/** Draw every record up to the current position (in order; decoding is async). */
function pump() {
  const mine = ctx;
  ctx.pump = ctx.pump.then(async () => {
    while (ctx === mine && mine.idx < mine.records.length && mine.records[mine.idx].t - mine.t0 <= mine.pos) {
      const rec = mine.records[mine.idx];
      mine.idx += 1;
      try { await apply(rec); } catch (err) { console.error("recorded update failed", err); }
    }
  });
  return ctx.pump;
}

async function seek(pos) {
  if (!ctx) return;
  const mine = ctx;
  await mine.pump;
  if (ctx !== mine) return;
  pos = Math.max(0, Math.min(mine.length, pos));
  if (pos < mine.pos || mine.idx === 0) {  // going back: replay from the start (updates are deltas)
    mine.idx = 0;
    mine.g.fillStyle = "#000";
    mine.g.fillRect(0, 0, mine.canvas.width, mine.canvas.height);
  }
  mine.pos = pos;
  mine.basePos = pos;
  mine.baseWall = performance.now();
  showTime();
  await pump();
}

function showTime() {
  ctx.scrub.value = String(ctx.pos);
  ctx.time.textContent = `${clock(ctx.pos)} / ${clock(ctx.length)}`;
}

function frame() {
  if (!ctx || !ctx.playing) return;
  ctx.pos = Math.min(ctx.length, ctx.basePos + ((performance.now() - ctx.baseWall) / 1000) * ctx.speed);
  showTime();
  pump();
  if (ctx.pos >= ctx.length) {
    pause();
    ctx.pump.then(() => { if (ctx) ctx.status.textContent = "Played to the end."; });
    return;
  }
  ctx.raf = requestAnimationFrame(frame);
}

function toggle() {
  if (!ctx || ctx.play.disabled) return;
  if (ctx.playing) { pause(); return; }
  if (ctx.pos >= ctx.length) { seek(0).then(start); return; }
  start();
}

function start() {
  if (!ctx) return;
  ctx.playing = true;
  ctx.basePos = ctx.pos;
  ctx.baseWall = performance.now();
  ctx.play.textContent = "❚❚ Pause";
  ctx.status.textContent = "Playing…";
  ctx.raf = requestAnimationFrame(frame);
}

function pause() {
  ctx.playing = false;
  cancelAnimationFrame(ctx.raf);
  ctx.play.textContent = "▶ Play";
}

function setSpeed(s) {
  if (!ctx) return;
  ctx.basePos = ctx.pos;
  ctx.baseWall = performance.now();
  ctx.speed = s;
}

export function key(ev) {
  if (ev.key === " ") { ev.preventDefault(); toggle(); }
  else if (ev.key === "f" && ctx) ctx.canvas.classList.toggle("fit");
}

export function leave() {
  if (ctx) { ctx.playing = false; cancelAnimationFrame(ctx.raf); }
  ctx = null;
}
