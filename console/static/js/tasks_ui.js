// Pieces shared by the Tasks pages and the device page's Tasks tab: run tables with output,
// the new-task form for the built-in actions, and the "how to run a script" note.
// Run output comes from devices: it only ever goes in as text (pre.textContent via h()).
import * as api from "./api.js";
import { badge, fmtTime, h, text, toast } from "./dom.js";

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
  if (!task.cron && counts.waiting) return "waiting for the grant window";
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
export function runsTable(runs, { device = true, task = false } = {}) {
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
      h("td", { class: "reason" }, text(r.reason)),
      h("td", { class: "output-cell" }, output(r), artifactLink(r)))))));
}

// --- new task form ---------------------------------------------------------------------------

const num = (id, value, min, max) => h("input", { type: "number", id, value: String(value), min: String(min), max: String(max), step: "1" });
const check = (id, label, checked = false, value = undefined) =>
  h("label", { class: "check" }, h("input", { type: "checkbox", id, checked, value }), label);

/** Built-in actions (agent/tasks catalog) with their typed parameter fields; scripts need the CLI. */
const ACTIONS = {
  diagnostics: {
    label: "Collect diagnostics bundle",
    fields: () => [field("Log lines", num("p-log-lines", 2000, 0, 20000)), check("p-include-inventory", "include inventory", true)],
    params: () => ({ log_lines: int("p-log-lines"), include_inventory: checked("p-include-inventory") }),
  },
  clear_temp: {
    label: "Clear temp / cache directories",
    fields: () => [h("div", { class: "field" }, h("span", {}, "Targets"),
      ...["tmp", "var_tmp", "apt_cache", "dnf_cache"].map((t) => check(`p-target-${t}`, t, t === "tmp", t))),
    field("Older than (days)", num("p-older-than", 7, 0, 3650)), check("p-dry-run", "dry run (only report)")],
    params: () => ({ targets: ["tmp", "var_tmp", "apt_cache", "dnf_cache"].filter((t) => checked(`p-target-${t}`)),
      older_than_days: int("p-older-than"), dry_run: checked("p-dry-run") }),
  },
  restart_service: {
    label: "Restart a service",
    fields: () => [field("Service name", h("input", { id: "p-service", required: true, placeholder: "e.g. cups.service",
      pattern: "[A-Za-z0-9][A-Za-z0-9@._:\\-]{0,127}" }))],
    params: () => ({ name: document.getElementById("p-service").value.trim() }),
  },
  updates: {
    label: "OS updates",
    fields: () => [field("Mode", h("select", { id: "p-mode" }, h("option", { value: "check" }, "check only"),
      h("option", { value: "apply" }, "apply"))), check("p-security-only", "security updates only")],
    params: () => ({ mode: document.getElementById("p-mode").value, security_only: checked("p-security-only") }),
  },
  reboot: {
    label: "Reboot",
    fields: () => [field("Message to the user", h("input", { id: "p-message", maxlength: "200",
      value: "IT maintenance: this computer will restart. Save your work." })),
    field("Delay if someone is logged in (min)", num("p-delay", 5, 1, 60))],
    params: () => ({ message: document.getElementById("p-message").value, delay_min: int("p-delay") }),
  },
};

function field(label, input) { return h("label", { class: "field" }, h("span", {}, label), input); }
function int(id) { return Math.trunc(Number(document.getElementById(id).value)); }
function checked(id) { return document.getElementById(id).checked; }

/** Active grants allowing `tasks` that may cover the target (the server and the agent decide for real). */
async function grantOptions(list, device) {
  try {
    const data = await api.get("/api/v1/grants", { status: "active" });
    const usable = (data.grants || []).filter((g) => (g.actions || []).includes("tasks") && (!device
      || (g.devices || []).includes(device.id) || (g.groups || []).includes(device.group)));
    list.replaceChildren(...usable.map((g) => h("option", { value: g.grant_id },
      `${g.reason || "grant"} — ${[...(g.devices || []), ...(g.groups || []).map((x) => `group ${x}`)].join(", ")}`)));
  } catch (err) {
    list.replaceChildren();  // no right to list grants: the id can still be typed
  }
}

/**
 * The one-off task form. `device` = {id, group} fixes the target (device page); otherwise the
 * user picks a device id or a group. `onCreated(task)` runs after a 201.
 */
export function newTaskForm({ device = null, onCreated }) {
  const kind = h("select", { id: "task-target-kind", "aria-label": "Target kind", disabled: Boolean(device) },
    h("option", { value: "device" }, "device"), h("option", { value: "group" }, "group"));
  const target = h("input", { id: "task-target", required: true, placeholder: "device id or group name",
    value: device ? device.id : "", readonly: Boolean(device), "aria-label": "Target" });
  const action = h("select", { id: "task-action", "aria-label": "Action" },
    Object.entries(ACTIONS).map(([k, a]) => h("option", { value: k }, a.label)));
  const params = h("div", { class: "params form-grid", id: "task-params" });
  const renderParams = () => params.replaceChildren(...ACTIONS[action.value].fields());
  action.addEventListener("change", renderParams);
  const grants = h("datalist", { id: "task-grant-options" });
  const grant = h("input", { id: "task-grant", required: true, list: "task-grant-options",
    placeholder: "grant id (active, with 'tasks')", autocomplete: "off" });
  const runAt = h("input", { type: "datetime-local", id: "task-run-at", "aria-label": "Run at" });
  const timeout = num("task-timeout", 30, 1, 1440);
  const result = h("p", { class: "form-error", id: "task-form-error", role: "alert" });
  const form = h("form", { class: "card new-task", id: "new-task-form", hidden: true, onsubmit: async (ev) => {
    ev.preventDefault();
    result.textContent = "";
    const body = { action: action.value, grant_id: grant.value.trim(), params: ACTIONS[action.value].params(),
      timeout_s: int("task-timeout") * 60 };
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
  h("div", { class: "form-grid" },
    field("Target", h("div", { class: "inline" }, kind, target)), field("Action", action),
    field("Grant", h("div", {}, grant, grants)), field("Run at (empty = now)", runAt),
    field("Timeout (min)", timeout)),
  params,
  h("div", { class: "inline" }, h("button", { type: "submit", class: "primary", id: "task-submit" }, "Create task"),
    h("button", { type: "button", onclick: () => { form.hidden = true; } }, "Cancel")),
  result, scriptHelp(device));
  renderParams();
  grantOptions(grants, device);
  return form;
}

/** Scripts are not started from the browser: they must be signed with the org grant key. */
export function scriptHelp(device) {
  const target = device ? `--device ${device.id}` : "--device DEVICE_ID   # or --group GROUP";
  return h("details", { class: "script-help", id: "script-help" }, h("summary", {}, "Run a script? Use the CLI (scripts must be signed)"),
    h("p", { class: "muted" }, "The agent runs a script only if the org's grant key signed its SHA-256 and parameters. "
      + "Sign it where the key lives, then submit it:"),
    h("pre", { class: "out" }, [
      "helpline admin script sign fix.sh --params '{\"interpreter\": \"sh\", \"args\": []}'   # writes fix.sh.sig",
      `helpline admin task run ${target} --action script --script fix.sh \\\n    --params '{"interpreter": "sh", "args": []}' --grant GRANT_ID   # same params as signed`,
      "helpline admin task schedule … --cron \"0 2 * * 1-5\"   # recurring, device-local time",
    ].join("\n")));
}
