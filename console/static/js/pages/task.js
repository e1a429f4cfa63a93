// One task: definition, approve/resume/cancel, its runs per device (state, exit code, output, timing) and rollout waves.
import * as api from "../api.js";
import { badge, clear, errorBox, fmtTime, h, renderValue, text, toast } from "../dom.js";
import { can, session } from "../state.js";
import { OPEN_RUN, displayStatus, runsTable } from "../tasks_ui.js";

let ctx = null;

export async function show(main, taskId) {
  ctx = { taskId, root: h("div", { id: "task-detail" }), timer: 0 };
  main.append(h("section", { class: "page" }, h("p", { class: "crumbs" }, h("a", { href: "#/tasks" }, "← Tasks")), ctx.root));
  await refresh();
}

async function refresh() {
  if (!ctx) return;
  const mine = ctx;
  let data;
  try {
    data = await api.get(`/api/v1/tasks/${encodeURIComponent(mine.taskId)}`);
  } catch (err) {
    clear(mine.root).append(errorBox(err));
    return;
  }
  const rollouts = [];
  for (const id of data.rollouts || []) {
    try { rollouts.push((await api.get(`/api/v1/rollouts/${encodeURIComponent(id)}`)).rollout); } catch (err) { rollouts.push({ id, error: err }); }
  }
  if (ctx !== mine) return;
  render(data.task, data.runs || [], rollouts);
  clearTimeout(mine.timer);
  const open = (data.runs || []).some((r) => OPEN_RUN.includes(r.status)) || data.task.cron;
  if (open && data.task.status !== "cancelled") mine.timer = setTimeout(refresh, 2000);
}

function render(task, runs, rollouts) {
  const actions = h("div", { class: "actions", id: "task-actions" });
  const me = session.me && session.me.user.username;
  if (task.status === "pending_approval" && can("administer", task.group) && can("run_tasks", task.group)
    && task.created_by !== me) {  // a second admin must approve; the server refuses the creator anyway
    actions.append(h("button", { type: "button", class: "primary", id: "task-approve", onclick: () => act(task, "approve") }, "Approve"));
  }
  if (task.status === "paused" && can("administer", task.group) && can("run_tasks", task.group)) {
    actions.append(h("button", { type: "button", class: "primary", id: "task-resume", onclick: () => act(task, "resume") }, "Resume"));
  }
  if (cancellable(task, runs) && can("run_tasks", task.group)) {
    actions.append(h("button", { type: "button", class: "danger", id: "task-cancel", onclick: () => act(task, "cancel") }, "Cancel task"));
  }
  const counts = {};
  for (const r of runs) counts[r.status] = (counts[r.status] || 0) + 1;
  clear(ctx.root).append(...[
    h("div", { class: "page-head" }, h("h1", {}, text(task.action), " ", h("span", { class: "muted mono" }, task.id)),
      badge(displayStatus(task, runs), displayStatus(task, runs).replace("_", " ")), actions),
    task.status === "pending_approval" ? h("div", { class: "notice notice-muted", role: "note" },
      `This task targets ${task.devices} devices: a second admin (not ${task.created_by}) must approve it before anything runs.`) : null,
    task.status === "paused" ? h("div", { class: "notice notice-muted", role: "note", id: "task-paused" },
      "This schedule is paused: an occurrence's failure rate passed the threshold, so its remaining waves were stopped "
      + "(see the rollout below). Nothing fires until an admin resumes it.") : null,
    h("dl", { class: "summary task-summary" },
      h("dt", {}, "Target"), h("dd", { class: "mono" }, text(task.target)),
      h("dt", {}, "Group"), h("dd", {}, text(task.group)),
      h("dt", {}, "Schedule"), h("dd", {}, task.cron ? `cron ${task.cron} (device-local)` : `once, ${task.run_at ? fmtTime(task.run_at) : "at once"}`),
      h("dt", {}, "Window"), h("dd", {}, `${Math.round(task.window_s / 60)} min${task.jitter_s ? `, jitter ${Math.round(task.jitter_s / 60)} min` : ""}, offline: ${task.offline_policy}`),
      h("dt", {}, "Technician"), h("dd", {}, text(task.technician)),
      h("dt", {}, "Signed by approvers"), h("dd", { class: "mono" }, task.document_id
        ? h("a", { href: `#/approvals/${encodeURIComponent(task.document_id)}`, id: "task-document" }, text(task.document_id))
        : text(task.document_id)),
      h("dt", {}, "Created"), h("dd", {}, `${fmtTime(task.created_at)} by ${task.created_by}`),
      h("dt", {}, "Approved by"), h("dd", {}, text(task.approved_by)),
      h("dt", {}, "Timeout"), h("dd", {}, `${Math.round(task.timeout_s / 60)} min`),
      h("dt", {}, "Runs"), h("dd", { id: "task-run-counts" }, Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ") || "none")),
    h("section", { class: "card" }, h("h2", {}, "Parameters"), renderValue(task.params),
      task.script_sha256 ? h("p", { class: "muted" }, "Script SHA-256: ", h("code", {}, task.script_sha256)) : null),
    ...rollouts.map(rolloutCard),
    h("section", { class: "card", id: "task-runs" }, h("h2", {}, "Runs per device"), runsTable(runs))].filter(Boolean));
}

/** Something is left to stop: runs still open, a task awaiting approval, or a schedule that fires again. */
function cancellable(task, runs) {
  if (task.status === "cancelled") return false;
  if (task.status === "pending_approval" || (task.cron && ["active", "paused"].includes(task.status))) return true;
  return runs.some((r) => OPEN_RUN.includes(r.status));
}

function rolloutCard(r) {
  if (r.error) return h("section", { class: "card" }, h("h2", {}, `Rollout ${r.id}`), errorBox(r.error));
  const released = Math.min(r.waves, r.current_wave + 1);
  return h("section", { class: "card rollout", dataset: { rollout: r.id } },
    h("h2", {}, "Rollout in waves ", badge(r.status)),
    h("dl", { class: "kv" },
      h("dt", {}, "Waves"), h("dd", {}, `${released} of ${r.waves} released (${r.wave_size} device${r.wave_size === 1 ? "" : "s"} each) `,
        h("progress", { max: String(r.waves), value: String(released), "aria-label": "Waves released" })),
      h("dt", {}, "Failure rate"), h("dd", { class: r.failure_rate > r.failure_threshold ? "bad" : "" },
        `${(r.failure_rate * 100).toFixed(0)} % (stops above ${(r.failure_threshold * 100).toFixed(0)} %)`),
      r.reason ? [h("dt", {}, r.status === "stopped" ? "Stopped" : "Note"), h("dd", { class: "rollout-reason" }, text(r.reason))] : null),
    h("table", { class: "grid" }, h("thead", {}, h("tr", {}, h("th", {}, "Wave"), h("th", {}, "Runs by state"))),
      h("tbody", {}, (r.by_wave || []).map((w) => h("tr", {}, h("td", {}, String(w.wave + 1)),
        h("td", {}, Object.entries(w.statuses).map(([s, n]) => [badge(s, `${n} ${s}`), " "])))))));
}

async function act(task, action) {
  if (action === "cancel" && !confirm(`Cancel task ${task.id}? Runs not yet delivered are cancelled; running ones are stopped by the agent.`)) return;
  try {
    await api.post(`/api/v1/tasks/${encodeURIComponent(task.id)}/${action}`);
    toast({ approve: "Task approved: runs start now.", resume: "Schedule resumed: it fires at the next occurrence.",
      cancel: "Task cancelled." }[action]);
  } catch (err) { toast(err.message, "error"); }
  await refresh();
}

export function leave() {
  if (ctx) clearTimeout(ctx.timer);
  ctx = null;
}
