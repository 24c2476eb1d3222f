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

// -- issue 17: spectrum, waterfall (spectrogram) and velocity RMS with ISO zones --

const INK = "#e6edf3";
const MUTED = "#9aa4b2";
const GRID = "rgba(154,164,178,0.15)";

// A canvas that fills its box's width (device pixels, redrawn on resize).
function fitCanvas(canvas, height) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(200, Math.floor(canvas.parentElement ? canvas.parentElement.clientWidth : 300));
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  canvas.width = Math.floor(width * ratio);
  canvas.height = Math.floor(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { ctx, width, height };
}

function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const mag = 10 ** Math.floor(Math.log10(raw || 1));
  const f = raw / mag;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

function fmtHz(f) {
  return f >= 1000 ? `${(f / 1000).toFixed(f >= 10000 ? 0 : 2)} kHz` : `${f.toFixed(f < 100 ? 1 : 0)} Hz`;
}

function fmtAmp(v) {
  if (!Number.isFinite(v)) return "–";
  return v >= 0.01 ? v.toPrecision(3) : v.toExponential(1);
}

// The line spectrum (RMS per line) with its peaks and running-speed orders
// labelled. `spec`: {f0, df, lines, peaks: [[Hz, rms]], orders: {"1": [Hz, rms]}, unit}.
export class SpectrumPlot {
  constructor(canvas, { height = 230 } = {}) {
    this.canvas = canvas;
    this.height = height;
    this.spec = null;
    this.onResize = () => this.draw();
    window.addEventListener("resize", this.onResize);
  }

  set(spec) {
    this.spec = spec;
    this.draw();
  }

  draw() {
    const spec = this.spec;
    const { ctx, width, height } = fitCanvas(this.canvas, this.height);
    ctx.clearRect(0, 0, width, height);
    if (!spec || !Array.isArray(spec.lines) || !spec.lines.length) return;
    const L = 56, R = 10, T = 22, B = 26;
    const n = spec.lines.length;
    const fmin = 0, fmax = spec.f0 + (n - 1) * spec.df;
    let top = 0;
    for (const v of spec.lines) if (v > top) top = v;
    top = (top || 1) * 1.25;
    const x = (f) => L + ((f - fmin) / (fmax - fmin || 1)) * (width - L - R);
    const y = (v) => height - B - (v / top) * (height - T - B);
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = GRID;
    ctx.fillStyle = MUTED;
    const xs = niceStep(fmax - fmin, 8);
    for (let f = 0; f <= fmax; f += xs) {
      ctx.beginPath(); ctx.moveTo(x(f), T); ctx.lineTo(x(f), height - B); ctx.stroke();
      ctx.textAlign = "center"; ctx.fillText(fmtHz(f), x(f), height - 8);
    }
    const ys = niceStep(top, 4);
    for (let v = 0; v <= top; v += ys) {
      ctx.beginPath(); ctx.moveTo(L, y(v)); ctx.lineTo(width - R, y(v)); ctx.stroke();
      ctx.textAlign = "right"; ctx.fillText(fmtAmp(v), L - 4, y(v) + 4);
    }
    ctx.save(); ctx.translate(12, T + (height - T - B) / 2); ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "center"; ctx.fillText(`${spec.unit || ""} RMS`, 0, 0); ctx.restore();
    // Orders: dashed verticals at n × running speed.
    const orders = spec.orders || {};
    ctx.setLineDash([4, 3]);
    ctx.strokeStyle = "rgba(255,183,77,0.8)";
    ctx.fillStyle = "#ffb74d";
    let prev = -Infinity, row = 0;
    for (const [k, v] of Object.entries(orders)) {
      if (!Array.isArray(v)) continue;
      const px = x(v[0]);
      ctx.beginPath(); ctx.moveTo(px, T); ctx.lineTo(px, height - B); ctx.stroke();
      // Orders close together on a wide axis: labels side by side, not on top of each other.
      const lx = Math.max(px, prev + 20);
      row = lx > px ? row : 0;
      prev = lx;
      ctx.textAlign = "left"; ctx.fillText(`${k}×`, lx + 2, T - 6);
    }
    ctx.setLineDash([]);
    ctx.strokeStyle = PALETTE[0];
    ctx.lineWidth = 1.2;
    ctx.beginPath();
    spec.lines.forEach((v, i) => {
      const px = x(spec.f0 + i * spec.df), py = y(v);
      if (i) ctx.lineTo(px, py); else ctx.moveTo(px, py);
    });
    ctx.stroke();
    ctx.lineWidth = 1;
    // Peaks: a dot and "frequency · amplitude" above it.
    ctx.fillStyle = INK;
    const placed = [];
    for (const [f, a] of (spec.peaks || []).slice(0, 5)) {
      const px = x(f);
      let k = Math.round((f - spec.f0) / spec.df);
      k = Math.min(Math.max(k, 0), n - 1);
      const py = y(spec.lines[k]);
      ctx.beginPath(); ctx.arc(px, py, 3, 0, 2 * Math.PI); ctx.fill();
      let ly = Math.max(T + 10, py - 8);
      while (placed.some((p) => Math.abs(p[0] - px) < 90 && Math.abs(p[1] - ly) < 12)) ly += 12;
      placed.push([px, ly]);
      ctx.textAlign = px > width - 120 ? "right" : "left";
      ctx.fillText(`${fmtHz(f)} · ${fmtAmp(a)}`, px + (ctx.textAlign === "left" ? 5 : -5), ly);
    }
  }

  destroy() {
    window.removeEventListener("resize", this.onResize);
  }
}

// Viridis-like colour map, t in [0, 1].
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function colour(t) {
  const s = Math.min(Math.max(t, 0), 1) * (STOPS.length - 1);
  const i = Math.min(Math.floor(s), STOPS.length - 2);
  const f = s - i;
  return STOPS[i].map((c, j) => Math.round(c + f * (STOPS[i + 1][j] - c)));
}

// Spectra over time as an image: a row per time step (oldest at the top),
// a column per frequency band, colour = level in dB over the view's range.
export class WaterfallPlot {
  constructor(canvas, { height = 240 } = {}) {
    this.canvas = canvas;
    this.height = height;
    this.wf = null;
    this.onResize = () => this.draw();
    window.addEventListener("resize", this.onResize);
  }

  set(wf) {
    this.wf = wf;
    this.draw();
  }

  draw() {
    const wf = this.wf;
    const { ctx, width, height } = fitCanvas(this.canvas, this.height);
    ctx.clearRect(0, 0, width, height);
    if (!wf || !Array.isArray(wf.rows) || !wf.rows.length) return;
    const rows = wf.rows.length, cols = wf.rows[0].length;
    const L = 120, R = 10, T = 6, B = 26;
    let lo = Infinity, hi = -Infinity;
    const db = wf.rows.map((r) => r.map((v) => {
      const d = 20 * Math.log10(Math.max(v, 1e-9));
      return d;
    }));
    for (const r of db) for (const d of r) { if (d > hi) hi = d; }
    lo = hi - 60; // a 60 dB range below the strongest cell
    const img = ctx.createImageData(cols, rows);
    db.forEach((r, i) => r.forEach((d, j) => {
      const [cr, cg, cb] = colour((d - lo) / (hi - lo || 1));
      const o = (i * cols + j) * 4;
      img.data[o] = cr; img.data[o + 1] = cg; img.data[o + 2] = cb; img.data[o + 3] = 255;
    }));
    const off = document.createElement("canvas");
    off.width = cols; off.height = rows;
    off.getContext("2d").putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, L, T, width - L - R, height - T - B);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = MUTED;
    const times = wf.time || [];
    ctx.textAlign = "right";
    if (times.length) {
      ctx.fillText(String(times[0]).slice(0, 16), L - 6, T + 10);
      ctx.fillText(String(times[times.length - 1]).slice(0, 16), L - 6, height - B - 2);
    }
    const fmax = wf.f0 + (cols - 0.5) * wf.df;
    const x = (f) => L + (f / fmax) * (width - L - R);
    const xs = niceStep(fmax, 8);
    ctx.textAlign = "center";
    for (let f = 0; f <= fmax; f += xs) ctx.fillText(fmtHz(f), x(f), height - 8);
  }

  destroy() {
    window.removeEventListener("resize", this.onResize);
  }
}

// ISO 10816-3 zones: A (good) … D (damage), shaded behind the velocity line.
const ZONE_FILL = ["rgba(46,125,50,0.28)", "rgba(158,157,36,0.26)", "rgba(239,108,0,0.26)", "rgba(198,40,40,0.30)"];

// Velocity RMS (mm/s) over time with the zone bands `edges` = [A/B, B/C, C/D].
export class VelocityChart {
  constructor(el, { height = 220, edges, label }) {
    this.el = el;
    this.edges = edges || [];
    const opts = {
      width: Math.max(200, el.clientWidth || 300),
      height,
      tzDate,
      fmtDate,
      scales: { x: { time: true, auto: false }, y: { range: (u, min, max) => [0, Math.max(max * 1.15, (this.edges[2] || 1) * 1.25)] } },
      series: [{}, lineSeries(label, INK, 2, true)],
      axes: [{ ...AXIS }, { ...AXIS, size: 60 }],
      hooks: {
        drawClear: [(u) => {
          const c = u.ctx;
          const { left, width: w } = u.bbox;
          const bounds = [0, ...this.edges, u.scales.y.max];
          c.save();
          for (let i = 0; i < 4 && i + 1 < bounds.length; i++) {
            const y0 = u.valToPos(Math.min(bounds[i + 1], u.scales.y.max), "y", true);
            const y1 = u.valToPos(bounds[i], "y", true);
            if (y1 <= y0) continue;
            c.fillStyle = ZONE_FILL[i];
            c.fillRect(left, y0, w, y1 - y0);
            c.fillStyle = "rgba(230,237,243,0.75)";
            c.font = `${Math.round(12 * (window.devicePixelRatio || 1))}px system-ui, sans-serif`;
            c.fillText("ABCD"[i], left + 6, y0 + (y1 - y0) / 2 + 4);
          }
          c.restore();
        }],
      },
    };
    this.chart = new uPlot(opts, [[], []], el);
    this.stopObserving = observeWidth(el, this.chart, height);
  }

  // At least the last hour, so a few minutes of data are a line and not a
  // point on a span of years.
  xRange(min, max) {
    if (min === null || max === null || !Number.isFinite(min) || !Number.isFinite(max)) return [min, max];
    return [Math.min(min, max - 3600), max + 60];
  }

  set(xs, ys) {
    this.chart.setData([xs, ys], false);
    if (xs.length) {
      const [min, max] = this.xRange(xs[0], xs[xs.length - 1]);
      this.chart.setScale("x", { min, max });
    }
  }

  destroy() {
    this.stopObserving();
    this.chart.destroy();
  }
}
