// In-session toolkit beside the screen: chat, file transfer both ways, clipboard sync (protocol/toolkit.py).
// Everything the device sends is shown as text (textContent), never markup. File chunks are binary
// messages whose first byte is 0xB1 (screen updates start with 0xA1); their header is
// magic u8, transfer u32, offset u64, big-endian.
//
// Files are never read whole: an upload is hashed slice by slice before it is offered (the offer carries the
// SHA-256: the device names a partial file by it, so a transfer resumes after a drop, and checks the whole file
// against it) and then read again chunk by chunk as the device's window allows; a fetch is hashed chunk by chunk
// as it arrives. WebCrypto only digests a whole buffer, so the incremental SHA-256 is @noble/hashes (audited,
// no dependencies), vendored by scripts/vendor-console.sh like uPlot and xterm.js.
import * as api from "./api.js";
import { fmtTime, h, toast } from "./dom.js";

export const CHUNK_MAGIC = 0xb1;
const HEADER = 13;
const MAX_CHAT = 2000;
const MAX_CLIP = 8000;
const WORDS = { chat: "chat", files: "files", clipboard: "clipboard", shell: "shell" };

/** Bytes read from a File at once while hashing it (and so the most of it in memory at a time). */
export const HASH_SLICE = 4 * 1024 * 1024;
let nobleModule = null;
let noble = null;  // the loaded module (loadNoble() starts loading it when a panel is made)

function loadNoble() {
  nobleModule = nobleModule || import("/static/vendor/noble-hashes/sha2.js")
    .then((m) => { noble = m; return m; }).catch(() => null);
  return nobleModule;
}

function hasherOf(module) {
  const state = module.sha256.create();
  return { update: (bytes) => state.update(bytes), hex: () => hex(state.digest()) };
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** An incremental SHA-256 (update(bytes), hex()); null when the vendored library is missing. */
async function newHasher() {
  const module = await loadNoble();
  return module ? hasherOf(module) : null;
}

/** The SHA-256 of a File or Blob, read HASH_SLICE at a time; ``progress(done)`` after each slice. */
async function sha256File(file, progress) {
  const hasher = await newHasher();
  if (!hasher) throw new Error("the SHA-256 library is missing: run scripts/setup.sh (it vendors console/static/vendor/)");
  for (let at = 0; at < file.size; at += HASH_SLICE) {
    hasher.update(new Uint8Array(await file.slice(at, Math.min(at + HASH_SLICE, file.size)).arrayBuffer()));
    progress(Math.min(at + HASH_SLICE, file.size));
  }
  return hasher.hex();
}

function chunk(transfer, offset, bytes) {
  const out = new Uint8Array(HEADER + bytes.byteLength);
  const view = new DataView(out.buffer);
  view.setUint8(0, CHUNK_MAGIC);
  view.setUint32(1, transfer);
  view.setBigUint64(5, BigInt(offset));
  out.set(new Uint8Array(bytes), HEADER);
  return out.buffer;
}

/** The toolkit panel; ``sendText(obj)`` and ``sendBinary(buf)`` write to the session's stream. */
export function toolkitPanel(sendText, sendBinary) {
  loadNoble();  // ready before a fetch's first chunk, so every chunk is hashed as it arrives
  const caps = h("p", { id: "toolkit-caps", class: "muted", role: "status" }, "Toolkit: waiting for the device…");
  const log = h("ol", { id: "chat-log", class: "chat-log", "aria-live": "polite" });
  const input = h("input", { id: "chat-input", type: "text", maxlength: String(MAX_CHAT), disabled: true,
    placeholder: "Message to the person at the device", "aria-label": "Chat message" });
  const sendBtn = h("button", { type: "button", id: "chat-send", disabled: true, onclick: sendChat }, "Send");
  input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); sendChat(); } });

  const fileInput = h("input", { id: "file-send", type: "file", disabled: true, "aria-label": "Send a file to the device",
    onchange: () => { if (fileInput.files.length) sendFile(fileInput.files[0]); } });
  const fetchPath = h("input", { id: "fetch-path", type: "text", disabled: true, maxlength: "1024",
    placeholder: "/path/on/the/device or ~/file", "aria-label": "File to fetch from the device" });
  const fetchBtn = h("button", { type: "button", id: "fetch-start", disabled: true, onclick: () => fetchFile(fetchPath.value.trim()) },
    "Fetch");
  const transfers = h("ul", { id: "transfers", class: "transfers" });

  const toDevice = h("input", { type: "checkbox", id: "clip-to-device", disabled: true, onchange: syncClip });
  const fromDevice = h("input", { type: "checkbox", id: "clip-from-device", disabled: true, onchange: syncClip });
  const clipOut = h("textarea", { id: "clip-paste", rows: "2", maxlength: String(MAX_CLIP), disabled: true,
    "aria-label": "Text for the device's clipboard" });
  const clipBtn = h("button", { type: "button", id: "clip-send", disabled: true, onclick: paste }, "Paste to device");
  const clipIn = h("textarea", { id: "clip-received", rows: "2", readonly: true, "aria-label": "The device's clipboard" });

  const box = h("aside", { class: "toolkit", id: "toolkit" },
    h("h3", {}, "Toolkit"), caps,
    h("section", { class: "toolkit-chat" }, h("h4", {}, "Chat"), log, h("div", { class: "row" }, input, sendBtn)),
    h("section", { class: "toolkit-files" }, h("h4", {}, "Files"),
      h("label", { class: "stacked" }, "Send to the device's Downloads:", fileInput),
      h("div", { class: "row" }, fetchPath, fetchBtn), transfers),
    h("section", { class: "toolkit-clip" }, h("h4", {}, "Clipboard"),
      h("div", { class: "row" }, h("label", { class: "check" }, toDevice, "to the device"),
        h("label", { class: "check" }, fromDevice, "from the device")),
      clipOut, h("div", { class: "row" }, clipBtn), h("label", { class: "stacked" }, "Device clipboard:", clipIn)));

  let nextTransfer = 1;  // the viewer's transfer numbers are odd
  const outgoing = new Map();  // transfer → {file, buf, acked, row, resolve}
  const incoming = new Map();  // transfer → {name, size, parts, got, row}

  const shownSeqs = new Set();

  /** The stored transcript (GET …/chat), for a session opened again or after it ended. */
  function loadTranscript(lines) {
    for (const line of lines) onText({ type: "chat.message", ...line });
  }

  function newTransfer() { const n = nextTransfer; nextTransfer += 2; return n; }

  function row(text) {
    const li = h("li", {}, text);
    transfers.append(li);
    return li;
  }

  function sendChat() {
    const text = input.value.trim();
    if (!text) return;
    sendText({ type: "chat.send", text: text.slice(0, MAX_CHAT) });
    input.value = "";
  }

  async function sendFile(file) {
    const transfer = newTransfer();
    const li = row(`→ ${file.name}: hashing…`);
    li.dataset.transfer = String(transfer);
    let digest;
    try {
      digest = await sha256File(file, (done) => {
        li.textContent = `→ ${file.name}: hashing ${Math.floor((100 * done) / Math.max(1, file.size))} %`;
      });
    } catch (err) {
      li.textContent = `✗ ${file.name}: ${err.message}`;
      li.dataset.state = "error";
      return;
    }
    li.dataset.sha256 = digest;
    outgoing.set(transfer, { file, size: file.size, sent: 0, acked: 0, chunk: 0, window: 0, li, pumping: false });
    li.textContent = `→ ${file.name}: offered (${file.size} bytes)`;
    sendText({ type: "file.offer", transfer, name: file.name, size: file.size, sha256: digest });
  }

  /** Send chunks while the device's window has room; a file that cannot be read any more ends the transfer. */
  function pump(t, transfer) {
    pumpChunks(t, transfer).catch((err) => {
      sendText({ type: "file.error", transfer, code: "read_failed", message: String(err.message).slice(0, 400) });
      finish(transfer, t.li, `✗ ${t.file.name}: ${err.message}`, "error");
    });
  }

  /** Each chunk is read from the file only when it is sent. */
  async function pumpChunks(t, transfer) {
    if (t.pumping) return;  // the running pump sees the new ack when its read returns
    t.pumping = true;
    try {
      while (outgoing.get(transfer) === t && t.sent < t.size && t.sent - t.acked < t.window * t.chunk) {
        const end = Math.min(t.sent + t.chunk, t.size);
        const bytes = await t.file.slice(t.sent, end).arrayBuffer();
        if (outgoing.get(transfer) !== t) return;  // ended (error) while reading
        sendBinary(chunk(transfer, t.sent, bytes));
        t.sent = end;
      }
    } finally {
      t.pumping = false;
    }
  }

  function fetchFile(path) {
    if (!path) return;
    const transfer = newTransfer();
    const li = row(`← ${path}: asked (the user may have to allow it)`);
    li.dataset.transfer = String(transfer);
    incoming.set(transfer, { name: "", size: 0, parts: [], got: 0, li, hasher: null });
    sendText({ type: "file.fetch", transfer, path });
  }

  function syncClip() {
    sendText({ type: "clip.sync", to_device: toDevice.checked, from_device: fromDevice.checked });
  }

  function paste() {
    if (clipOut.value) sendText({ type: "clip.set", text: clipOut.value.slice(0, MAX_CLIP) });
  }

  function enable(allowed) {
    const chat = allowed.includes("chat"), files = allowed.includes("files"), clip = allowed.includes("clipboard");
    input.disabled = sendBtn.disabled = !chat;
    fileInput.disabled = fetchPath.disabled = fetchBtn.disabled = !files;
    toDevice.disabled = fromDevice.disabled = clipOut.disabled = clipBtn.disabled = !clip;
  }

  function finish(transfer, li, text, state) {
    li.textContent = text;
    li.dataset.state = state;
    outgoing.delete(transfer);
    incoming.delete(transfer);
  }

  async function onText(msg) {
    switch (msg.type) {
      case "toolkit.caps": {
        const allowed = Array.isArray(msg.allowed) ? msg.allowed.filter((c) => WORDS[c]) : [];
        const refused = Object.entries(msg.refused || {}).map(([c, why]) => `${WORDS[c] || "?"}: ${String(why)}`);
        caps.textContent = `This session may also: ${allowed.map((c) => WORDS[c]).join(", ") || "nothing"}`
          + (refused.length ? ` — not: ${refused.join("; ")}` : "");
        caps.dataset.allowed = allowed.join(",");
        enable(allowed);
        return true;
      }
      case "chat.message": {
        if (shownSeqs.has(msg.seq)) return true;  // already shown from the stored transcript
        shownSeqs.add(msg.seq);
        const who = msg.sender === "user" ? "User" : (String(msg.name || "") || "Technician");
        const when = new Date(Number(msg.at) * 1000).toLocaleTimeString();
        log.append(h("li", { class: `chat-${msg.sender === "user" ? "user" : "technician"}` },
          h("span", { class: "muted" }, `${when} ${who}: `), String(msg.text)));
        log.scrollTop = log.scrollHeight;
        return true;
      }
      case "file.accept": {
        const t = outgoing.get(msg.transfer);
        if (!t) return true;
        Object.assign(t, { sent: msg.offset, acked: msg.offset, chunk: msg.chunk, window: msg.window });
        t.li.textContent = `→ ${t.file.name}: sending…`;
        pump(t, msg.transfer);
        return true;
      }
      case "file.ack": {
        const t = outgoing.get(msg.transfer);
        if (t) {
          t.acked = Math.max(t.acked, msg.offset);
          t.li.textContent = `→ ${t.file.name}: ${Math.floor((100 * t.acked) / Math.max(1, t.size))} %`;
          pump(t, msg.transfer);
        }
        return true;
      }
      case "file.done": {
        const t = outgoing.get(msg.transfer);
        if (t) finish(msg.transfer, t.li, `→ sent as ${String(msg.name)} (${msg.size} bytes, SHA-256 ${String(msg.sha256).slice(0, 16)}…)`, "done");
        return true;
      }
      case "file.start": {
        const t = incoming.get(msg.transfer);
        if (!t) return true;
        Object.assign(t, { name: String(msg.name), size: msg.size, got: msg.offset });
        t.li.textContent = `← ${t.name}: receiving…`;
        t.hasher = noble ? hasherOf(noble) : null;  // null: hashed whole at the end (the library is missing)
        return true;
      }
      case "file.end": {
        const t = incoming.get(msg.transfer);
        if (!t) return true;
        const blob = new Blob(t.parts);
        const digest = t.hasher ? t.hasher.hex()
          : hex(new Uint8Array(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer())));
        if (digest !== msg.sha256) {
          finish(msg.transfer, t.li, `← ${t.name}: the SHA-256 does not match; discarded`, "error");
          return true;
        }
        const link = h("a", { href: URL.createObjectURL(blob), download: t.name, class: "fetched" }, `save ${t.name}`);
        finish(msg.transfer, t.li, `← ${t.name} (${t.size} bytes, SHA-256 ${digest.slice(0, 16)}…) `, "done");
        t.li.dataset.sha256 = digest;
        t.li.append(link);
        return true;
      }
      case "file.error": {
        const t = outgoing.get(msg.transfer) || incoming.get(msg.transfer);
        const text = `${msg.code}: ${String(msg.message || "")}`;
        if (t) finish(msg.transfer, t.li, `✗ ${text}`, "error");
        else toast(text, "error");
        return true;
      }
      case "clip.set":
        clipIn.value = String(msg.text);
        return true;
      case "clip.sync":
        toDevice.checked = Boolean(msg.to_device);
        fromDevice.checked = Boolean(msg.from_device);
        return true;
      default:
        return false;
    }
  }

  /** A binary message that is a file chunk (true), or a screen update left to the screen code (false). */
  function onBinary(buf) {
    const view = new DataView(buf);
    if (buf.byteLength < 1 || view.getUint8(0) !== CHUNK_MAGIC) return false;
    if (buf.byteLength <= HEADER) return true;
    const transfer = view.getUint32(1), offset = Number(view.getBigUint64(5));
    const t = incoming.get(transfer);
    if (!t || offset !== t.got) return true;
    const bytes = buf.slice(HEADER);
    t.parts.push(bytes);
    if (t.hasher) t.hasher.update(new Uint8Array(bytes));
    t.got += buf.byteLength - HEADER;
    t.li.textContent = `← ${t.name}: ${Math.floor((100 * t.got) / Math.max(1, t.size))} %`;
    sendText({ type: "file.ack", transfer, offset: t.got });
    return true;
  }

  return { box, onText, onBinary, loadTranscript };
}

/** The stored chat of a session for the device's session history: loaded when opened, shown as text. */
export function chatCell(sessionId) {
  const box = h("details", { class: "output chat" }, h("summary", {}, "Chat"));
  let loaded = false;
  box.addEventListener("toggle", async () => {
    if (!box.open || loaded) return;
    loaded = true;
    try {
      const t = await api.get(`/api/v1/sessions/${encodeURIComponent(sessionId)}/chat`);
      const lines = t.chat || [];
      box.append(lines.length ? h("ol", { class: "chat-log" }, lines.map((l) => h("li",
        { class: `chat-${l.sender === "user" ? "user" : "technician"}` },
        h("span", { class: "muted" }, `${fmtTime(l.at)} ${l.sender === "user" ? "User" : (String(l.name || "") || "Technician")}: `),
        String(l.text))))
        : h("span", { class: "muted" }, "No chat in this session."));
    } catch (err) {
      box.append(h("span", { class: "muted" }, `Chat not available: ${err.message}`));
    }
  });
  return box;
}
