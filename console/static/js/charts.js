// Health charts with uPlot (vendored by the set-up script into /static/vendor/).
import { h } from "./dom.js";

let uplotModule = null;

async function loadUPlot() {
  if (uplotModule === null) {
    uplotModule = import("/static/vendor/uPlot.esm.js").then((m) => {
      if (!document.querySelector("link[data-uplot]")) {
        document.head.append(h("link", { rel: "stylesheet", href: "/static/vendor/uPlot.min.css", "data-uplot": "1" }));
      }
      return m.default;
    }).catch(() => null);
  }
  return uplotModule;
}

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"];

/** Draw one time-series chart: xs (epoch s) and named series; returns the container element. */
export async function lineChart(title, xs, series, { unit = "", width = 560, height = 180 } = {}) {
  const box = h("figure", { class: "chart" }, h("figcaption", {}, title));
  const UPlot = await loadUPlot();
  if (!UPlot) {
    box.append(h("p", { class: "muted" }, "Charts need uPlot: run scripts/setup.sh (it vendors console/static/vendor/)."));
    return box;
  }
  const opts = {
    width, height,
    scales: { x: { time: true } },
    axes: [{}, { values: (_u, vals) => vals.map((v) => (v === null ? "" : `${v}${unit}`)) }],
    series: [{}, ...series.map(([name], i) => ({ label: name, stroke: COLORS[i % COLORS.length], width: 1.5,
      spanGaps: false }))],
  };
  const plot = h("div", { class: "chart-plot" });
  box.append(plot);
  // eslint-disable-next-line no-new
  new UPlot(opts, [xs, ...series.map(([, ys]) => ys)], plot);
  return box;
}
