// The support desk's numbers (issue 19): headline tiles, charts per day (uPlot), tables by technician,
// group and category, the CSV. Every figure comes from GET /api/v1/kpis; definitions in the README.
import * as api from "../api.js";
import { lineChart } from "../charts.js";
import { clear, h, text, unavailable } from "../dom.js";

const DAY = 86400;
const DURATIONS = [["mtta", "MTTA"], ["time_to_connect", "Time to connect"], ["aht", "AHT"], ["mttr", "MTTR"]];
const BREAKDOWNS = [["technician", "By technician"], ["group", "By group"], ["category", "By category"]];

let period = null;  // {from, to} in epoch seconds, kept while the console stays open

function ensureCss() {
  if (!document.querySelector("link[data-kpis]")) {
    document.head.append(h("link", { rel: "stylesheet", href: "/static/kpis.css", "data-kpis": "1" }));
  }
}

/** 75 → "1 min 15 s", 5400 → "1 h 30 min"; null → "—". */
export function fmtDuration(s) {
  if (s === null || s === undefined) return "—";
  const total = Math.round(s);
  if (total < 60) return `${total} s`;
  if (total < 3600) return `${Math.floor(total / 60)} min ${total % 60} s`;
  if (total < DAY) return `${Math.floor(total / 3600)} h ${Math.round((total % 3600) / 60)} min`;
  return `${Math.floor(total / DAY)} d ${Math.round((total % DAY) / 3600)} h`;
}

const pct = (x) => (x === null || x === undefined ? "—" : `${(x * 100).toFixed(1)} %`);
const score = (x) => (x === null || x === undefined ? "—" : x.toFixed(2));
const dateInput = (epoch) => new Date(epoch * 1000).toISOString().slice(0, 10);
const epochOf = (value) => Date.parse(`${value}T00:00:00Z`) / 1000;

export async function show(main) {
  ensureCss();
  if (period === null) {
    const to = Math.ceil(Date.now() / 1000 / DAY) * DAY;  // the end of today (UTC)
    period = { from: to - 30 * DAY, to };
  }
  const from = h("input", { type: "date", id: "kpi-from", value: dateInput(period.from) });
  const to = h("input", { type: "date", id: "kpi-to", value: dateInput(period.to - DAY) });
  const csv = h("a", { id: "kpi-csv", download: "kpis.csv" }, "Export CSV");
  const body = h("div", { id: "kpi-body" });
  const apply = () => {
    if (from.value && to.value) period = { from: epochOf(from.value), to: epochOf(to.value) + DAY };
    load(body, csv);
  };
  main.append(h("section", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, "Support desk"),
      h("span", { class: "muted" }, "Requests created in the period; definitions in the README."),
      h("div", { class: "actions" }, csv)),
    h("div", { class: "toolbar" },
      h("label", { class: "field" }, h("span", {}, "From"), from),
      h("label", { class: "field" }, h("span", {}, "To (inclusive)"), to),
      h("button", { type: "button", id: "kpi-apply", onclick: apply }, "Show")),
    body));
  await load(body, csv);
}

async function load(body, csv) {
  const params = { from: period.from, to: period.to };
  csv.href = `/api/v1/kpis.csv?from=${period.from}&to=${period.to}`;
  let total, daily, said, parts;
  try {
    [total, daily, said, ...parts] = await Promise.all([
      api.get("/api/v1/kpis", params), api.get("/api/v1/kpis", { ...params, by: "day" }),
      api.get("/api/v1/kpis/comments", params),
      ...BREAKDOWNS.map(([by]) => api.get("/api/v1/kpis", { ...params, by }))]);
  } catch (err) {
    clear(body).append(unavailable("The support desk's numbers", err));
    return;
  }
  clear(body).append(
    tiles(total.total),
    h("div", { class: "kpi-charts", id: "kpi-charts" }, ...(await charts(daily.buckets, period))),
    ...BREAKDOWNS.map(([by, title], i) => table(by, title, parts[i].buckets)),
    comments(said.comments));
  body.dataset.loaded = "1";
}

/** What people wrote in their surveys (their words: text nodes only), newest first. */
function comments(items) {
  return h("section", { class: "kpi-table" }, h("h2", {}, "Comments"),
    items.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "kpi-comments" },
      h("thead", {}, h("tr", {}, ["Score", "Comment", "Technician", "Request"].map((c) => h("th", {}, c)))),
      h("tbody", {}, items.map((c) => h("tr", { dataset: { requestId: c.request_id } },
        h("td", { class: "num", dataset: { col: "score" } }, String(c.score)),
        h("td", { dataset: { col: "comment" } }, text(c.comment)),
        h("td", { dataset: { col: "technician" } }, text(c.technician)),
        h("td", { dataset: { col: "request" }, title: c.summary }, `#${c.number}`))))))
      : h("p", { class: "muted", id: "kpi-no-comments" }, "No survey comments in the period."));
}

function tile(id, label, value, raw, sub) {
  return h("div", { class: "kpi-tile", dataset: { kpi: id, value: raw === null || raw === undefined ? "" : String(raw) } },
    h("div", { class: "kpi-label" }, label), h("div", { class: "kpi-value" }, value),
    sub ? h("div", { class: "kpi-sub muted" }, sub) : null);
}

function tiles(f) {
  return h("div", { class: "kpi-tiles", id: "kpi-tiles" },
    ...DURATIONS.map(([key, label]) => tile(key, label, fmtDuration(f[key].mean), f[key].mean,
      `median ${fmtDuration(f[key].median)} · p90 ${fmtDuration(f[key].p90)} · n ${f[key].n}`)),
    tile("fcr", "FCR", pct(f.fcr_rate), f.fcr_rate, `${f.fcr_yes} yes · ${f.fcr_no} no · ${f.fcr_pending} pending`),
    tile("csat", "CSAT", score(f.csat.mean), f.csat.mean, `${pct(f.csat_satisfied)} scored 4–5 · n ${f.csat.n}`),
    tile("response_rate", "Survey responses", pct(f.response_rate), f.response_rate,
      `${f.surveys_answered} of ${f.surveys_asked} asked`),
    tile("requests", "Requests", String(f.requests), f.requests, `${f.resolved} resolved`));
}

async function charts(buckets, { from, to }) {
  const axes = { xRange: [from, to], yMin: 0 };
  const xs = buckets.map((b) => epochOf(b.key));
  const minutes = (key, part) => buckets.map((b) => (b.figures[key][part] === null ? null : b.figures[key][part] / 60));
  const rate = (get) => buckets.map((b) => (get(b.figures) === null ? null : get(b.figures) * 100));
  return Promise.all([
    lineChart("Median per day (minutes)", xs, [["MTTA", minutes("mtta", "median")],
      ["Time to connect", minutes("time_to_connect", "median")], ["AHT", minutes("aht", "median")],
      ["MTTR", minutes("mttr", "median")]], { unit: " min", ...axes }),
    lineChart("FCR, CSAT 4–5 and survey responses per day (%)", xs, [["FCR", rate((f) => f.fcr_rate)],
      ["CSAT 4–5", rate((f) => f.csat_satisfied)], ["Responses", rate((f) => f.response_rate)]],
    { unit: " %", ...axes, yMax: 100 }),
  ]);
}

function table(by, title, buckets) {
  const cols = [["Requests", (f) => String(f.requests), "requests"], ["Resolved", (f) => String(f.resolved), "resolved"],
    ...DURATIONS.flatMap(([key, label]) => [
      [`${label} mean`, (f) => fmtDuration(f[key].mean), `${key}_mean`],
      [`median`, (f) => fmtDuration(f[key].median), `${key}_median`],
      [`p90`, (f) => fmtDuration(f[key].p90), `${key}_p90`]]),
    ["FCR", (f) => pct(f.fcr_rate), "fcr_rate"], ["CSAT", (f) => score(f.csat.mean), "csat_mean"],
    ["4–5", (f) => pct(f.csat_satisfied), "csat_satisfied"], ["Responses", (f) => pct(f.response_rate), "response_rate"]];
  return h("section", { class: "kpi-table" }, h("h2", {}, title),
    buckets.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid", id: `kpi-by-${by}` },
      h("thead", {}, h("tr", {}, h("th", {}, by), ...cols.map(([c]) => h("th", {}, c)))),
      h("tbody", {}, buckets.map((b) => h("tr", { dataset: { key: b.key } }, h("td", {}, text(b.key)),
        ...cols.map(([, get, col]) => h("td", { dataset: { col } }, get(b.figures))))))))
      : h("p", { class: "muted" }, "No requests in the period."));
}
