// uPlot wrappers: a live chart per sensor and a history chart per level.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export const PALETTE = ["#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176", "#4db6ac", "#f06292"];
const AXIS = { stroke: "#9aa4b2", grid: { stroke: "rgba(154,164,178,0.15)" }, ticks: { stroke: "rgba(154,164,178,0.3)" } };

// Times are server wall-clock text placed as UTC (see util.wallSeconds).
const tzDate = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
// ISO dates and a 24-hour clock instead of uPlot's US defaults.
const fmtDate = (tpl) => uPlot.fmtDate(tpl
  .replace(/\{h\}\{aa\}/g, "{HH}:00").replace(/\{h\}/g, "{HH}").replace(/\{aa\}/g, "")
  .replace("{M}/{D}/{YY}", "{YYYY}-{MM}-{DD}").replace("{M}/{D}", "{MM}-{DD}"));

function observeWidth(el, chart, height) {
  const fit = () => {
    const w = Math.max(200, Math.floor(el.clientWidth));
    if (w !== chart.width) chart.setSize({ width: w, height });
  };
  if (typeof ResizeObserver !== "undefined") {
    const ro = new ResizeObserver(fit);
    ro.observe(el);
    return () => ro.disconnect();
  }
  window.addEventListener("resize", fit);
  return () => window.removeEventListener("resize", fit);
}

function lineSeries(label, color, width, points) {
  return { label, stroke: color, width, spanGaps: true, points: { show: points, size: 4, fill: color } };
}

// One sensor, two series on one time axis: the per-second stream (`second`
// events) and the interval means (`initialize` backfill and `update`).
export class LiveChart {
  constructor(el, { height = 180, labels, windowSeconds = 3600, maxPoints = 4000 }) {
    this.el = el;
    this.height = height;
    this.windowSeconds = windowSeconds;
    this.maxPoints = maxPoints;
    this.data = [[], [], []];
    this.points = 0; // values received (exposed as data-points for tests)
    this.pending = false;
    const opts = {
      width: Math.max(200, el.clientWidth || 300),
      height,
      tzDate,
      fmtDate,
      scales: { x: { time: true } },
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      series: [
        {},
        lineSeries(labels.second, PALETTE[0], 1, false),
        lineSeries(labels.update, PALETTE[1], 2, true),
      ],
      axes: [{ ...AXIS }, { ...AXIS, size: 60 }],
    };
    this.chart = new uPlot(opts, this.data, el);
    this.stopObserving = observeWidth(el, this.chart, height);
    el.dataset.points = "0";
  }

  // series: 1 = per second, 2 = interval mean
  add(series, x, y) {
    if (x === null || !Number.isFinite(x)) return;
    const value = y === null || y === undefined ? null : Number(y);
    const [xs] = this.data;
    let i = xs.length;
    if (i && xs[i - 1] >= x) {
      // Out of order (backfill after live points): binary search.
      let lo = 0, hi = xs.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (xs[mid] < x) lo = mid + 1; else hi = mid;
      }
      i = lo;
    }
    if (xs[i] === x) {
      this.data[series][i] = value;
    } else {
      xs.splice(i, 0, x);
      this.data[1].splice(i, 0, null);
      this.data[2].splice(i, 0, null);
      this.data[series][i] = value;
    }
    this.points += 1;
    this.trim();
    this.schedule();
  }

  trim() {
    const xs = this.data[0];
    const last = xs[xs.length - 1];
    let drop = 0;
    while (drop < xs.length && (xs[drop] < last - this.windowSeconds || xs.length - drop > this.maxPoints)) drop++;
    if (drop) for (const arr of this.data) arr.splice(0, drop);
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    const draw = () => {
      this.pending = false;
      this.chart.setData(this.data);
      this.el.dataset.points = String(this.points);
      this.el.dataset.shown = String(this.data[0].length);
    };
    // rAF pauses in hidden tabs; a timer keeps wall displays current anyway.
    if (document.hidden) setTimeout(draw, 1000);
    else requestAnimationFrame(draw);
  }

  destroy() {
    this.stopObserving();
    this.chart.destroy();
  }
}

// Several named series (one per sensor) of {x, y} rows, joined on time.
// `stepped`: each value holds until the next x (month and year buckets,
// whose rows carry an extra point at the end of the last bucket).
export class HistoryChart {
  constructor(el, { height = 260, series, range, stepped = false }) {
    this.el = el;
    const names = Object.keys(series);
    const tables = names.map((name) => {
      const rows = series[name];
      return [rows.map((r) => r.x), rows.map((r) => r.y)];
    });
    const data = tables.length ? uPlot.join(tables) : [[]];
    const opts = {
      width: Math.max(200, el.clientWidth || 300),
      height,
      tzDate,
      fmtDate,
      // The requested date range, not just the span of the rows.
      scales: { x: range ? { time: true, range: () => range } : { time: true } },
      series: [{}, ...names.map((n, i) => ({
        ...lineSeries(n, PALETTE[i % PALETTE.length], 2, true),
        ...(stepped ? { paths: uPlot.paths.stepped({ align: 1 }) } : {}),
      }))],
      axes: [{ ...AXIS }, { ...AXIS, size: 60 }],
    };
    this.chart = new uPlot(opts, data, el);
    this.stopObserving = observeWidth(el, this.chart, height);
  }

  destroy() {
    this.stopObserving();
    this.chart.destroy();
  }
}
