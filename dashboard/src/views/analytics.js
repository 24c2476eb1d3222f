// Issue 17 on the machine page: for each sensor with spectra (sampled at
// ≥ 1 kHz), the latest spectrum with its peaks and orders labelled, a
// waterfall of the last hours and velocity RMS with the ISO 10816-3 zones
// shaded. The zone boundaries come from /features (never copied here).

import { getJSON } from "../api.js";
import { SpectrumPlot, VelocityChart, WaterfallPlot } from "../charts.js";
import { t } from "../i18n.js";
import { clear, h, num, wallSeconds } from "../util.js";

const REFRESH_MS = 30000;
const SPECTRA_MIN_RATE = 1000; // the spectra room's threshold (docs/analytics.md)

function fmtHz(f) {
  return `${Number(f).toFixed(f < 100 ? 1 : 0)} Hz`;
}

export function analyticsPanel(name, ch) {
  const body = h("div", { class: "grid analytics-grid" });
  const note = h("p", { class: "muted" }, t("waiting_spectrum"));
  const el = h("section", { class: "panel analytics", id: "analytics", dataset: { sensors: "" } },
    h("h2", {}, t("analytics")), note, body);
  const cards = new Map();
  const offs = [];
  let timer = null;
  let stopped = false;

  function card(sensor) {
    let c = cards.get(sensor);
    if (c) return c;
    const specCanvas = h("canvas", { class: "spectrum", dataset: { sensor } });
    const wfCanvas = h("canvas", { class: "waterfall", dataset: { sensor } });
    const velBox = h("div", { class: "chart velocity-chart", dataset: { sensor } });
    const specInfo = h("p", { class: "muted spectrum-info" });
    const labels = h("ul", { class: "peak-labels" });
    const zone = h("span", { class: "badge iso-zone", dataset: { zone: "" } }, "–");
    const isoNote = h("p", { class: "muted iso-note" });
    const wfInfo = h("p", { class: "muted waterfall-info" });
    const cardEl = h("article", { class: "card analytics-card", dataset: { sensor } },
      h("header", {}, h("h3", {}, sensor), zone),
      h("h4", {}, t("spectrum")), h("div", { class: "canvas-box" }, specCanvas), specInfo, labels,
      h("h4", {}, t("waterfall")), h("div", { class: "canvas-box" }, wfCanvas), wfInfo,
      h("h4", {}, t("velocity_rms")), velBox, isoNote);
    body.append(cardEl);
    c = {
      el: cardEl, specCanvas, wfCanvas, velBox, specInfo, labels, zone, isoNote, wfInfo,
      spectrum: new SpectrumPlot(specCanvas), waterfall: new WaterfallPlot(wfCanvas), velocity: null,
    };
    cards.set(sensor, c);
    el.dataset.sensors = [...cards.keys()].join(",");
    note.hidden = true;
    return c;
  }

  function showSpectrum(sensor, spec, source) {
    if (!spec || !Array.isArray(spec.lines)) return;
    const c = card(sensor);
    c.spectrum.set(spec);
    const peaks = Array.isArray(spec.peaks) ? spec.peaks : [];
    Object.assign(c.specCanvas.dataset, {
      lines: String(spec.lines.length), t0: String(spec.t0), source,
      peakHz: peaks.length ? String(peaks[0][0]) : "", amplitude: spec.amplitude || "rms",
    });
    c.specInfo.textContent = `${spec.time || ""} · ${t("amplitude_rms", spec.unit || "")} · Δf ${num(spec.df)} Hz`;
    const items = peaks.slice(0, 5).map(([f, a]) => h("li", { dataset: { kind: "peak", hz: String(f) } },
      `${fmtHz(f)}: ${num(a)} ${spec.unit || ""}`));
    for (const [k, v] of Object.entries(spec.orders || {})) {
      if (Array.isArray(v)) items.push(h("li", { dataset: { kind: "order", order: k, hz: String(v[0]) } },
        `${k}× (${fmtHz(v[0])}): ${num(v[1])} ${spec.unit || ""}`));
    }
    clear(c.labels).append(...items);
  }

  function showWaterfall(sensor, wf) {
    const c = card(sensor);
    c.waterfall.set(wf);
    const rows = (wf && wf.rows) || [];
    Object.assign(c.wfCanvas.dataset, { rows: String(rows.length), cols: String(rows.length ? rows[0].length : 0) });
    c.wfInfo.textContent = rows.length
      ? `${t("waterfall_rows", rows.length)} · ${wf.time[0]} – ${wf.time[wf.time.length - 1]}`
      : t("no_rows");
  }

  function showFeatures(sensor, got) {
    const c = card(sensor);
    const iso = got.iso10816 || {};
    const edges = Array.isArray(iso.boundaries) ? iso.boundaries : [];
    if (!c.velocity) {
      c.velocity = new VelocityChart(c.velBox, { edges, label: t("velocity_rms_unit") });
    }
    c.velocity.edges = edges;
    const xs = [], ys = [];
    for (const r of got.rows || []) {
      const x = wallSeconds(r.time);
      if (x === null) continue;
      xs.push(x);
      ys.push(typeof r.velocity_rms === "number" ? r.velocity_rms : null);
    }
    c.velocity.set(xs, ys);
    const last = (got.rows || []).length ? got.rows[got.rows.length - 1] : null;
    const zone = last && last.features && last.features.iso ? last.features.iso.zone : null;
    Object.assign(c.velBox.dataset, {
      points: String(ys.filter((v) => v !== null).length), zones: edges.join(","),
      latest: last && typeof last.velocity_rms === "number" ? String(last.velocity_rms) : "",
      zone: zone || "",
    });
    c.zone.textContent = zone ? `ISO ${zone} · ${num(last.velocity_rms)} mm/s` : "ISO –";
    c.zone.dataset.zone = zone || "";
    c.zone.className = `badge iso-zone ${zone === "A" || zone === "B" ? "good" : zone === "C" ? "warn" : zone === "D" ? "bad" : "muted"}`;
    c.isoNote.textContent = iso.refusal
      ? iso.refusal
      : `ISO 10816-3, ${t("iso_group", iso.group, iso.foundation)}: A/B ${edges[0]} · B/C ${edges[1]} · C/D ${edges[2]} mm/s`;
  }

  // Sensors sampled at ≥ 1 kHz (from /machines metadata). Metadata is known
  // once a sensor sent data in this run, so on the first look every sensor
  // is also tried for stored spectra (an offline machine after a restart).
  let probed = false;
  async function sensorsWithSpectra() {
    const got = await getJSON("machines");
    const m = ((got && got.machines) || []).find((x) => x.machine === name);
    const sensors = (m && m.sensors) || [];
    const fast = sensors.filter((s) => s.meta && s.meta.rate >= SPECTRA_MIN_RATE).map((s) => s.name);
    if (fast.length || probed) return fast;
    probed = true;
    return sensors.filter((s) => !s.meta).map((s) => s.name);
  }

  async function refresh() {
    try {
      const sensors = cards.size ? [...cards.keys()] : await sensorsWithSpectra();
      for (const sensor of sensors) {
        const spec = await getJSON("spectrum", { machine: name, sensor }, { optional: true });
        if (stopped) return;
        if (!spec) continue; // no minute closed yet
        showSpectrum(sensor, spec, "rest");
        const [wf, feats] = await Promise.all([
          getJSON("spectrum/waterfall", { machine: name, sensor, rows: 120, lines: 200 }),
          getJSON("features", { machine: name, sensor }),
        ]);
        if (stopped) return;
        showWaterfall(sensor, wf);
        showFeatures(sensor, feats);
      }
      subscribe();
    } catch (e) {
      if (!cards.size) note.textContent = t("error", e.message);
    }
  }

  // Live: the newest minute's spectrum as soon as it is stored.
  const subscribed = new Set();
  function subscribe() {
    const fresh = [...cards.keys()].filter((s) => !subscribed.has(s));
    if (!fresh.length || !ch.connected) return;
    for (const s of fresh) subscribed.add(s);
    ch.emit("subscribe_spectrum", fresh);
  }
  offs.push(ch.on("connect", () => { subscribed.clear(); subscribe(); }));
  offs.push(ch.on("spectrum", (p) => {
    if (p && typeof p.sensor_name === "string" && cards.has(p.sensor_name)) showSpectrum(p.sensor_name, p, "live");
  }));

  const loop = async () => {
    await refresh();
    if (!stopped) timer = setTimeout(loop, REFRESH_MS);
  };
  loop();

  return {
    el,
    destroy() {
      stopped = true;
      clearTimeout(timer);
      for (const off of offs) off();
      if (ch.connected && subscribed.size) ch.emit("unsubscribe_spectrum");
      for (const c of cards.values()) {
        c.spectrum.destroy();
        c.waterfall.destroy();
        if (c.velocity) c.velocity.destroy();
      }
    },
  };
}
