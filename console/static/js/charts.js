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

/** An axis number without float noise (0.30000000000000004 → 0.3), at most three significant digits below 100. */
function axisNumber(v) {
  return Math.abs(v) >= 100 ? v.toFixed(0) : String(Number(v.toPrecision(3)));
}

/** Draw one time-series chart: xs (epoch s) and named series; returns the container element.
 *
 * ``xRange`` ([from, to], epoch s) pins the time axis to a chosen period: uPlot's own range
 * around a single day spans years. ``yMin`` / ``yMax`` pin the value axis (durations and shares
 * start at 0; shares end at 100): a flat series otherwise gets a range around its one value. */
export async function lineChart(title, xs, series, { unit = "", width = 560, height = 180, xRange = null,
  yMin = null, yMax = null } = {}) {
  const box = h("figure", { class: "chart" }, h("figcaption", {}, title));
  const UPlot = await loadUPlot();
  if (!UPlot) {
    box.append(h("p", { class: "muted" }, "Charts need uPlot: run scripts/setup.sh (it vendors console/static/vendor/)."));
    return box;
  }
  const opts = {
    width, height,
    scales: {
      x: xRange ? { time: true, range: () => xRange } : { time: true },
      y: yMin === null && yMax === null ? {} : {
        range: (_u, min, max) => {
          const lo = yMin === null ? min : Math.min(yMin, min);
          const top = yMax === null ? Math.max(max, lo + 1) * 1.1 : Math.max(yMax, max);
          return [lo, top > lo ? top : lo + 1];
        },
      },
    },
    // Wide enough for "0.25 min" or "100 %" (uPlot's default width cut their first characters).
    axes: [{}, { size: 68, values: (_u, vals) => vals.map((v) => (v === null ? "" : `${axisNumber(v)}${unit}`)) }],
    series: [{}, ...series.map(([name], i) => ({ label: name, stroke: COLORS[i % COLORS.length], width: 1.5,
      spanGaps: false }))],
  };
  const plot = h("div", { class: "chart-plot" });
  box.append(plot);
  // eslint-disable-next-line no-new
  new UPlot(opts, [xs, ...series.map(([, ys]) => ys)], plot);
  return box;
}
