// Remote shell tab of the session page: an xterm.js terminal on a pty of the device (protocol/shell.py).
// Terminal bytes are binary messages whose first byte is 0xC1 both ways (screen updates start with 0xA1,
// toolkit chunks with 0xB1); shell.* text messages open, resize and close it. What the device prints is
// written into the terminal (xterm.js renders it as text, never as markup). The recording player replays
// the server's asciicast v2 file (output only) into a terminal of its own.
// xterm.js sets its layout in <style> elements, which the console's CSP (style-src 'self') blocks. While it
// builds a terminal, those elements are made inert hidden <div>s instead, and their text is copied into
// constructed stylesheets (adoptedStyleSheets), which CSP allows: the layout applies, nothing is "inline".
import { h } from "./dom.js";

export const SHELL_MAGIC = 0xc1;
const MAX_DATA = 64 * 1024;
const encoder = new TextEncoder();
let xtermModule = null;

function loadXterm() {
  if (!xtermModule) {
    xtermModule = Promise.all([import("/static/vendor/xterm.mjs"), import("/static/vendor/addon-fit.mjs")])
      .then(([x, f]) => {
        if (!document.querySelector("link[data-xterm]")) {
          document.head.append(h("link", { rel: "stylesheet", href: "/static/vendor/xterm.css", "data-xterm": "1" }));
        }
        return { Terminal: x.Terminal, FitAddon: f.FitAddon };
      });
  }
  return xtermModule;
}

/** Mirror xterm's own <style> elements under ``root`` into adopted stylesheets (CSP blocks inline styles). */
function adoptStyles(root) {
  const sheets = new Map();
  const sync = () => {
    for (const el of root.querySelectorAll("[data-xterm-style]")) {
      let sheet = sheets.get(el);
      if (!sheet) { sheet = new CSSStyleSheet(); sheets.set(el, sheet); }
      try { sheet.replaceSync(el.textContent || ""); } catch (err) { console.error("terminal style", err); }
    }
    const adopted = document.adoptedStyleSheets.filter((s) => ![...sheets.values()].includes(s));
    document.adoptedStyleSheets = [...adopted, ...sheets.values()];
  };
  const observer = new MutationObserver(sync);
  observer.observe(root, { subtree: true, childList: true, characterData: true });
  sync();
  return () => {
    observer.disconnect();
    document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => ![...sheets.values()].includes(s));
  };
}

async function newTerminal(host, options = {}) {
  const { Terminal, FitAddon } = await loadXterm();
  const unadopt = adoptStyles(host);
  const term = withoutStyleElements(() => new Terminal({ convertEol: false, cursorBlink: true, scrollback: 5000,
    fontSize: 14, ...options }));
  const fit = new FitAddon();
  term.loadAddon(fit);
  withoutStyleElements(() => term.open(host));
  return { term, fit, unadopt };
}

/** Run ``build`` with document.createElement("style") giving an inert hidden element (see the header). */
function withoutStyleElements(build) {
  const original = document.createElement;
  document.createElement = function createElement(tag, ...rest) {
    if (String(tag).toLowerCase() !== "style") return original.call(this, tag, ...rest);
    const el = original.call(this, "div", ...rest);
    el.hidden = true;
    el.dataset.xtermStyle = "1";
    return el;
  };
  try { return build(); } finally { document.createElement = original; }
}

/** The Shell tab; ``send(obj)`` and ``sendBinary(buf)`` write to the session's stream. */
export function shellTab(sessionId, send, sendBinary) {
  const status = h("p", { id: "shell-status", class: "muted", role: "status" }, "No shell running.");
  const rootBox = h("input", { type: "checkbox", id: "shell-root" });
  const openBtn = h("button", { type: "button", id: "shell-open", onclick: open }, "Open shell");
  const closeBtn = h("button", { type: "button", id: "shell-close", disabled: true, onclick: () => send({ type: "shell.close" }) },
    "Close shell");
  const playBtn = h("button", { type: "button", id: "shell-play", onclick: play }, "Play recording");
  const host = h("div", { id: "shell-terminal", class: "shell-terminal" });
  const box = h("section", { id: "shell-tab", class: "shell-tab", hidden: true },
    h("div", { class: "inline shell-bar" }, openBtn, h("label", { class: "check" }, rootBox, "as root (if the device allows it)"),
      closeBtn, playBtn),
    status, host);
  const state = { term: null, fit: null, unadopt: null, running: false, observer: null, player: false };
  box.shell = state;  // for tests and the benchmark: the live terminal (state.term.buffer)

  async function ensureTerminal() {
    if (state.term && !state.player) return state.term;
    dispose();
    const made = await newTerminal(host);
    Object.assign(state, made, { player: false });
    state.term.onData((text) => {
      if (!state.running) return;
      const bytes = encoder.encode(text);
      for (let at = 0; at < bytes.length; at += MAX_DATA) {
        const part = bytes.subarray(at, at + MAX_DATA);
        const out = new Uint8Array(part.length + 1);
        out[0] = SHELL_MAGIC;
        out.set(part, 1);
        sendBinary(out.buffer);
      }
    });
    state.term.onResize(({ cols, rows }) => { if (state.running) send({ type: "shell.resize", cols, rows }); });
    state.observer = new ResizeObserver(() => { if (!box.hidden) state.fit.fit(); });
    state.observer.observe(host);
    return state.term;
  }

  function dispose() {
    if (state.observer) state.observer.disconnect();
    if (state.term) state.term.dispose();
    if (state.unadopt) state.unadopt();
    Object.assign(state, { term: null, fit: null, unadopt: null, observer: null });
    host.replaceChildren();
  }

  async function open() {
    try {
      const term = await ensureTerminal();
      state.fit.fit();
      term.focus();
      status.textContent = "Opening a shell…";
      openBtn.disabled = true;
      send({ type: "shell.open", cols: term.cols, rows: term.rows, root: rootBox.checked });
    } catch (err) {
      status.textContent = `The terminal is unavailable (run scripts/setup.sh to vendor xterm.js): ${err.message}`;
    }
  }

  async function play() {
    const resp = await fetch(`/api/v1/sessions/${encodeURIComponent(sessionId)}/shell-recording`,
      { credentials: "same-origin", cache: "no-store" });
    if (!resp.ok) {
      let message = `${resp.status} ${resp.statusText}`;
      try { message = (await resp.json()).error.message || message; } catch { /* not JSON */ }
      status.textContent = `No shell recording: ${message}`;
      return;
    }
    const text = await resp.text();
    dispose();
    const lines = text.split("\n").filter((l) => l.trim());
    let header;
    try { header = JSON.parse(lines[0]); } catch { status.textContent = "Not an asciicast recording."; return; }
    const made = await newTerminal(host, { cols: header.width || 80, rows: header.height || 24, cursorBlink: false,
      disableStdin: true });
    Object.assign(state, made, { player: true, running: false });
    status.textContent = `Replaying the shell recording (${lines.length - 1} events; output only)…`;
    box.dataset.replay = "playing";
    let last = 0;
    for (const line of lines.slice(1)) {
      let ev;
      try { ev = JSON.parse(line); } catch { continue; }
      if (!Array.isArray(ev) || ev.length < 3) continue;
      const [t, kind, data] = ev;
      const wait = Math.min(Math.max(0, t - last), 1.0);  // long pauses shortened to a second
      last = t;
      if (wait > 0.01) await new Promise((r) => setTimeout(r, wait * 1000));
      if (!state.player) return;  // a live shell replaced the player
      if (kind === "o") await new Promise((r) => state.term.write(String(data), r));
      else if (kind === "r") {
        const m = /^(\d+)x(\d+)$/.exec(String(data));
        if (m) state.term.resize(Number(m[1]), Number(m[2]));
      }
    }
    box.dataset.replay = "done";
    status.textContent = "Replay finished.";
  }

  function onBinary(buf) {
    const bytes = new Uint8Array(buf);
    if (bytes.length < 1 || bytes[0] !== SHELL_MAGIC) return false;
    if (state.term && !state.player) state.term.write(bytes.subarray(1));
    return true;
  }

  function onText(msg) {
    if (msg.type === "shell.opened") {
      state.running = true;
      closeBtn.disabled = false;
      status.textContent = `Shell as ${msg.user} (uid ${msg.uid}) on ${msg.tty}${msg.root ? " — ROOT" : ""}.`;
      box.dataset.state = "running";
    } else if (msg.type === "shell.exit") {
      state.running = false;
      openBtn.disabled = false;
      closeBtn.disabled = true;
      status.textContent = `Shell ended (status ${msg.status}${msg.reason ? `, ${msg.reason}` : ""}).`;
      box.dataset.state = "exited";
    } else if (msg.type === "shell.error") {
      openBtn.disabled = state.running;
      status.textContent = `Shell refused: ${msg.message || msg.code} (${msg.code}).`;
      box.dataset.state = "refused";
      box.dataset.code = String(msg.code);
    }
  }

  function show(visible) {
    box.hidden = !visible;
    if (visible && state.fit) state.fit.fit();
    if (visible && state.term) state.term.focus();
  }

  return { box, onText, onBinary, show, leave: dispose };
}
