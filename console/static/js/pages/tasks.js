// Tasks and schedules: state, target, action, schedule, next run; filters; new one-off task.
import * as api from "../api.js";
import { badge, clear, fmtTime, h, text, unavailable } from "../dom.js";
import { can } from "../state.js";
import { newTaskForm, nextRun, runTally } from "../tasks_ui.js";

const filters = { q: "", status: "", kind: "" };
let body = null;
let tasks = [];
let selected = -1;
let nextCursor = null;
let more = null;

export async function show(main) {
  body = h("tbody", { id: "task-rows" });
  const search = h("input", { type: "search", id: "task-search", "data-search": "1", value: filters.q,
    placeholder: "Filter by action, target, technician, id…  (/)", "aria-label": "Filter tasks",
    oninput: (ev) => { filters.q = ev.target.value.trim().toLowerCase(); render(); } });
  const status = h("select", { id: "task-filter-status", "aria-label": "Status", onchange: (ev) => { filters.status = ev.target.value; render(); } },
    [["", "Any status"], ["active", "active"], ["completed", "completed (one-off, all runs done)"],
      ["pending_approval", "pending approval"], ["paused", "paused (schedule stopped by a rollout)"], ["cancelled", "cancelled"]]
      .map(([v, l]) => h("option", { value: v, selected: v === filters.status }, l)));
  const kind = h("select", { id: "task-filter-kind", "aria-label": "Schedule", onchange: (ev) => { filters.kind = ev.target.value; render(); } },
    [["", "One-off and recurring"], ["once", "one-off"], ["cron", "recurring"]]
      .map(([v, l]) => h("option", { value: v, selected: v === filters.kind }, l)));
  const mayRun = can("run_tasks");
  const form = mayRun ? newTaskForm({ onCreated: (task) => { location.hash = `#/tasks/${encodeURIComponent(task.id)}`; } }) : null;
  main.append(h("section", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, "Tasks"), h("span", { class: "muted", id: "task-total" }),
      h("div", { class: "actions" }, mayRun ? h("button", { type: "button", class: "primary", id: "new-task",
        onclick: () => { form.hidden = !form.hidden; } }, "New task") : null)),
    mayRun ? form : h("p", { class: "muted", id: "no-task-rights" }, "You may not run tasks on any group."),
    h("div", { class: "toolbar" }, search, status, kind),
    h("div", { class: "table-wrap" }, h("table", { class: "grid tasks" },
      h("thead", {}, h("tr", {}, ["State", "Action", "Target", "Schedule", "Next run", "Devices", "Technician", "Created"]
        .map((c) => h("th", {}, c)))), body)),
    more = h("button", { type: "button", id: "tasks-more", hidden: true, onclick: () => load(true) }, "Load older tasks")));
  await load();
}

/** First page, or (older) the page after the last one shown; the server pages by cursor. */
async function load(older = false) {
  let data;
  try { data = await api.get("/api/v1/tasks", { before: older ? nextCursor : null }); } catch (err) {
    if (body) clear(body).append(h("tr", {}, h("td", { colspan: 8 }, unavailable("Tasks", err))));
    return;
  }
  tasks = older ? tasks.concat(data.tasks || []) : (data.tasks || []);
  nextCursor = data.next || null;
  if (more) more.hidden = !nextCursor;
  render();
}

/** A one-off task whose runs all finished is "completed" (the server keeps it "active"). */
function statusOf(t) {
  const tally = runTally(t);
  return t.status === "active" && !t.cron && tally.total && !tally.open ? "completed" : t.status;
}

function matches(t) {
  if (filters.status && statusOf(t) !== filters.status) return false;
  if (filters.kind === "cron" && !t.cron) return false;
  if (filters.kind === "once" && t.cron) return false;
  if (!filters.q) return true;
  return [t.id, t.action, t.target, t.group, t.technician, t.created_by, t.cron].some((v) => String(v || "").toLowerCase().includes(filters.q));
}

function progress(t) {
  const tally = runTally(t);
  if (!tally.total) return String(t.devices);
  return `${tally.done}/${tally.total} done`;
}

function render() {
  if (!body) return;
  const shown = tasks.filter(matches);
  selected = -1;
  document.getElementById("task-total").textContent = `${shown.length} of ${tasks.length} task${tasks.length === 1 ? "" : "s"}`;
  clear(body);
  if (!shown.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted empty" }, tasks.length ? "No task matches." : "No tasks yet.")));
  for (const t of shown) {
    const href = `#/tasks/${encodeURIComponent(t.id)}`;
    body.append(h("tr", { class: "clickable", dataset: { task: t.id }, onclick: () => { location.hash = href; } },
      h("td", {}, badge(statusOf(t), statusOf(t).replace("_", " "))),
      h("td", {}, h("a", { href }, text(t.action))),
      h("td", { class: "mono" }, text(t.target)),
      h("td", {}, t.cron ? h("span", { class: "mono" }, `cron ${t.cron}`) : `once, ${t.run_at ? fmtTime(t.run_at) : "at once"}`),
      h("td", { class: "next-run", dataset: { nextDue: t.next_due ?? "" } }, nextRun(t)),
      h("td", {}, progress(t)),
      h("td", {}, text(t.technician)),
      h("td", {}, fmtTime(t.created_at))));
  }
}

export function key(ev) {
  const trs = body ? [...body.querySelectorAll("tr.clickable")] : [];
  if (!trs.length) return;
  if (ev.key === "j" || ev.key === "k") {
    selected = Math.max(0, Math.min(trs.length - 1, selected + (ev.key === "j" ? 1 : -1)));
    trs.forEach((tr, i) => tr.classList.toggle("selected", i === selected));
    trs[selected].scrollIntoView({ block: "nearest" });
  } else if (ev.key === "Enter" && selected >= 0) {
    location.hash = `#/tasks/${encodeURIComponent(trs[selected].dataset.task)}`;
  }
}

export function leave() { body = null; more = null; nextCursor = null; }
