// Pieces shared by the Tasks pages and the device page's Tasks tab: run tables with output,
// the new-task form (a target and an approver-signed task authorization), and the "how to run a script" note.
// Run output comes from devices: it only ever goes in as text (pre.textContent via h()).
import * as api from "./api.js";
import { badge, fmtTime, h, text, toast } from "./dom.js";
import { signTechnicianStatement } from "./passkeys.js";

export const OPEN_RUN = ["held", "queued", "sent", "waiting"];

export function duration(start, end) {
  if (!start || !end) return "—";
  const s = Math.max(0, Number(end) - Number(start));
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** A one-off task whose runs all finished is "completed" (the server keeps it "active"). */
export function displayStatus(task, runs) {
  if (task.status === "active" && !task.cron && runs && runs.length && runs.every((r) => !OPEN_RUN.includes(r.status))) {
    return "completed";
  }
  return task.status;
}

/** Runs of a task by status, from the list API's `run_counts`: total, still open, finished. */
export function runTally(task) {
  const counts = task.run_counts || {};
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const open = OPEN_RUN.reduce((a, s) => a + (counts[s] || 0), 0);
  return { total, open, done: total - open };
}

/** Where a task stands for the list, from the API's `next_due` (the next cron occurrence across
 *  its devices, or a one-off task's earliest open run) and `run_counts`. */
export function nextRun(task) {
  if (task.status === "cancelled") return "—";
  if (task.status === "pending_approval") return "after approval";
  if (task.status === "paused") return "paused (an admin must resume)";
  const counts = task.run_counts || {};
  if (!task.cron && counts.sent) return "running now";
  if (!task.cron && counts.waiting) return "waiting for the signed window";
  if (task.next_due) return fmtTime(task.next_due);
  return task.cron ? "not scheduled yet" : "done";
}

function output(run) {
  if (!run.stdout && !run.stderr) return h("span", { class: "muted" }, "no output");
  return h("details", { class: "output" },
    h("summary", {}, `Output (${(run.stdout || "").length + (run.stderr || "").length} chars${run.truncated ? ", truncated" : ""})`),
    run.stdout ? [h("div", { class: "stream-label" }, "stdout"), h("pre", { class: "out stdout" }, run.stdout)] : null,
    run.stderr ? [h("div", { class: "stream-label" }, "stderr"), h("pre", { class: "out stderr" }, run.stderr)] : null);
}

/** Download link for a run's stored diagnostics bundle (the server checks run-tasks and audits it). */
function artifactLink(run) {
  const art = run.details && run.details.artifact;
  if (art && art.expired) {
    return h("span", { class: "artifact-expired muted", title: `sha256 ${art.sha256}` },
      `Bundle deleted ${fmtTime(art.expired_at)} (${art.retention_days}-day retention)`);
  }
  if (!art || !art.stored) return null;
  return h("a", { class: "artifact-link", href: `/api/v1/tasks/runs/${encodeURIComponent(run.run_id)}/artifact`,
    download: `diagnostics-${run.run_id}.tar.gz`, title: `sha256 ${art.sha256}` },
    `Download bundle (${Math.max(1, Math.round(art.size / 1024))} KiB)`);
}

/** A table of runs; `columns` picks "device" (task pages) or "task" (device page). */
/**
 * A run of a task authorization naming technicians waits for the device's challenge to be signed: my passkey
 * signs it (TechnicianStatement, action "tasks") and the proof goes to the device, which checks it.
 */
function proveButton(r, onChange) {
  const c = r.status === "waiting" && r.details ? r.details.challenge : null;
  if (!c) return null;
  const button = h("button", { type: "button", class: "primary prove-run", onclick: async () => {
    button.disabled = true;
    try {
      const proof = await signTechnicianStatement(c);
      const after = await api.post(`/api/v1/tasks/runs/${encodeURIComponent(r.run_id)}/proof`, proof);
      const failed = ["refused", "failed", "timed_out", "cancelled"].includes(after.status);
      toast(failed ? `The device refused: ${after.reason || after.status}` : `Proof sent; the run is ${after.status}.`,
        failed ? "error" : "info");
    } catch (err) {
      toast(err.name === "NotAllowedError" ? "Passkey cancelled." : err.message, "error");
      button.disabled = false;
    }
    if (onChange) onChange();
  } }, "Prove with passkey");
  return h("div", { class: "run-proof" }, button, h("span", { class: "muted" }, ` challenge expires ${fmtTime(c.expires_at)}`));
}

export function runsTable(runs, { device = true, task = false, onChange = null } = {}) {
  if (!runs.length) return h("p", { class: "muted" }, "No runs yet.");
  const head = [task ? "Task" : null, device ? "Device" : null, "State", "Exit", "Due", "Started", "Duration", "Reason",
    "Output"].filter(Boolean);
  return h("div", { class: "table-wrap" }, h("table", { class: "grid runs" },
    h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))),
    h("tbody", {}, runs.map((r) => h("tr", { dataset: { run: r.run_id, status: r.status } },
      task ? h("td", {}, h("a", { href: `#/tasks/${encodeURIComponent(r.task_id)}` }, text(r.action || r.task_id))) : null,
      device ? h("td", { class: "mono" }, h("a", { href: `#/devices/${encodeURIComponent(r.device_id)}` }, text(r.device_id))) : null,
      h("td", {}, badge(r.status), r.wave ? h("span", { class: "muted" }, ` wave ${r.wave + 1}`) : null),
      h("td", { class: "mono exit-code" }, r.exit_code === null || r.exit_code === undefined ? "—" : String(r.exit_code)),
      h("td", {}, fmtTime(r.not_before || r.due_at)),
      h("td", {}, fmtTime(r.started_at)),
      h("td", {}, duration(r.started_at, r.ended_at)),
      h("td", { class: "reason" }, text(r.reason), proveButton(r, onChange)),
      h("td", { class: "output-cell" }, output(r), artifactLink(r)))))));
}

// --- new task form ---------------------------------------------------------------------------

const num = (id, value, min, max) => h("input", { type: "number", id, value: String(value), min: String(min), max: String(max), step: "1" });

function field(label, input) { return h("label", { class: "field" }, h("span", {}, label), input); }
function int(id) { return Math.trunc(Number(document.getElementById(id).value)); }

/** What a task authorization lets run, in one line (its action, parameters, script hash). */
function describeDocument(d) {
  const b = d.body || {};
  const script = b.script_sha256 ? `, script sha256 ${b.script_sha256.slice(0, 16)}…` : "";
  return `${b.action} ${JSON.stringify(b.params || {})}${script}`;
}

/** One-off task authorizations approved (as the server sees it) that name the target; devices decide for real. */
async function documentOptions(list, known, device) {
  try {
    const data = await api.get("/api/v1/documents", { status: "approved" });
    const usable = (data.documents || []).filter((d) => d.kind === "task" && !(d.body || {}).schedule && (!device
      || (d.body.devices || []).includes(device.id) || (d.body.groups || []).includes(device.group)));
    known.clear();
    usable.forEach((d) => known.set(d.document_id, d));
    list.replaceChildren(...usable.map((d) => h("option", { value: d.document_id }, describeDocument(d))));
  } catch (err) {
    list.replaceChildren();  // no right to list documents: the id can still be typed
  }
}

/**
 * The one-off task form: a target and an approver-signed task authorization, whose action and
 * parameters are what runs. `device` = {id, group} fixes the target (device page); otherwise the
 * user picks a device id or a group. `onCreated(task)` runs after a 201.
 */
export function newTaskForm({ device = null, onCreated }) {
  const kind = h("select", { id: "task-target-kind", "aria-label": "Target kind", disabled: Boolean(device) },
    h("option", { value: "device" }, "device"), h("option", { value: "group" }, "group"));
  const target = h("input", { id: "task-target", required: true, placeholder: "device id or group name",
    value: device ? device.id : "", readonly: Boolean(device), "aria-label": "Target" });
  const options = h("datalist", { id: "task-document-options" });
  const known = new Map();
  const what = h("p", { class: "muted", id: "task-document-summary" }, "Pick an approved task authorization.");
  const documentId = h("input", { id: "task-document", required: true, list: "task-document-options",
    placeholder: "task authorization id (approved)", autocomplete: "off", oninput: () => {
      const d = known.get(documentId.value.trim());
      what.textContent = d ? `Runs: ${describeDocument(d)}` : "The device checks the document's approvals itself.";
      submit.disabled = Boolean(d && d.body.script_sha256);
      if (submit.disabled) what.textContent += " — a script's text goes with the CLI (see below).";
    } });
  const runAt = h("input", { type: "datetime-local", id: "task-run-at", "aria-label": "Run at" });
  const timeout = num("task-timeout", 30, 1, 1440);
  const result = h("p", { class: "form-error", id: "task-form-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary", id: "task-submit" }, "Create task");
  const form = h("form", { class: "card new-task", id: "new-task-form", hidden: true, onsubmit: async (ev) => {
    ev.preventDefault();
    result.textContent = "";
    const body = { document_id: documentId.value.trim(), timeout_s: int("task-timeout") * 60 };
    body[kind.value] = target.value.trim();
    if (runAt.value) body.run_at = new Date(runAt.value).getTime() / 1000;
    try {
      const res = await api.post("/api/v1/tasks", body);
      toast(res.task.status === "pending_approval" ? "Task created: it waits for a second admin's approval."
        : "Task created.");
      form.hidden = true;
      onCreated(res.task);
    } catch (err) { result.textContent = err.message; }
  } },
  h("h2", {}, "New one-off task"),
  h("p", { class: "muted" }, "A task runs only what approvers signed in its task authorization — action, parameters, "
    + "script, devices and validity — and each device verifies that document itself."),
  h("div", { class: "form-grid" },
    field("Target", h("div", { class: "inline" }, kind, target)),
    field("Task authorization", h("div", {}, documentId, options)), field("Run at (empty = now)", runAt),
    field("Timeout (min)", timeout)),
  what,
  h("div", { class: "inline" }, submit,
    h("button", { type: "button", onclick: () => { form.hidden = true; } }, "Cancel")),
  result, scriptHelp(device));
  documentOptions(options, known, device);
  return form;
}

/** Scripts are not started from the browser: the CLI sends the script's text, whose SHA-256 approvers signed. */
export function scriptHelp(device) {
  const target = device ? `--device ${device.id}` : "--device DEVICE_ID   # or --group GROUP";
  return h("details", { class: "script-help", id: "script-help" }, h("summary", {}, "Run a script? Use the CLI"),
    h("p", { class: "muted" }, "A device runs a script only under a task authorization naming its SHA-256 and "
      + "parameters, approved by two approvers (four-eyes is checked on the device). Write and sign it where the "
      + "approvers' keys live, then submit the task with the script:"),
    h("pre", { class: "out" }, [
      "sha256sum fix.sh   # goes into the document's script_sha256",
      "helpline approve draft fix-task.json --kind task --out fix-doc.json",
      "helpline approve sign fix-doc.json --key KEY --cert CERT   # each approver",
      "helpline approve submit fix-doc.json --server URL --ca CA.pem",
      `helpline admin task run ${target} --document DOC_ID --script fix.sh`,
      "helpline admin task schedule … --document DOC_ID   # a document with a signed schedule",
    ].join("\n")));
}
