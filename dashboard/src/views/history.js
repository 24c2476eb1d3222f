// Hour/day/month/year statistics of one machine for a date range.

import { downloadUrl, getJSON } from "../api.js";
import { HistoryChart } from "../charts.js";
import { rows as rowCount, t } from "../i18n.js";
import { clear, h, num, serverClockKnown, serverDaysAgo, wallSeconds, wallText } from "../util.js";

const LEVELS = ["hour", "day", "month", "year"];
// The span the deployed app shows per level (today minus N days).
const DEFAULT_DAYS = { hour: 2, day: 30, month: 365, year: 3650 };
const MAX_TABLE_ROWS = 1000;
const STAT_FIELDS = ["skewness", "kurtosis", "peak", "peak_to_peak", "crest"];

// The start of the bucket after the one starting at `x` (wall seconds placed as UTC).
function bucketEnd(x, level) {
  const d = new Date(x * 1000);
  if (level === "month") return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) / 1000;
  if (level === "year") return Date.UTC(d.getUTCFullYear() + 1, 0, 1) / 1000;
  if (level === "day") return x + 86400;
  return x + 3600;
}

function shiftDate(iso, days) {
  const d = new Date(`${iso}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + days);
  return d.toISOString().slice(0, 10);
}

function sensorOf(rowName, level) {
  const suffix = `_${level}_avg`;
  return rowName && rowName.endsWith(suffix) ? rowName.slice(0, -suffix.length) : String(rowName);
}

export function historyView(ctx, machineName, query) {
  const { store } = ctx;
  const level0 = LEVELS.includes(query.get("level")) ? query.get("level") : "hour";
  const machine = h("select", { name: "machine" });
  const level = h("select", { name: "level" }, LEVELS.map((l) => h("option", { value: l, selected: l === level0 }, t(l))));
  const start = h("input", { type: "date", name: "start", value: query.get("start") || serverDaysAgo(DEFAULT_DAYS[level0]) });
  const end = h("input", { type: "date", name: "end", value: query.get("end") || serverDaysAgo(0) });
  const csv = h("a", { class: "csv", download: "", id: "history-csv" }, t("csv"));
  const chartBox = h("div", { class: "chart history-chart" });
  const out = h("div", { class: "history-rows", id: "history-rows" });
  let chart = null;

  const fillMachines = () => {
    const names = [...store.machines.keys()].sort();
    if (machineName && !names.includes(machineName)) names.unshift(machineName);
    const current = machine.value || machineName;
    clear(machine).append(...names.map((n) => h("option", { value: n, selected: n === current }, n)));
  };
  fillMachines();
  const off = store.onChange(() => {
    if (machine.options.length >= store.machines.size) return;
    const had = machine.value;
    fillMachines();
    if (!had && machine.value) load();
  });

  // A new level shows its default span, ending where the range ends now.
  level.addEventListener("change", () => { start.value = shiftDate(end.value || serverDaysAgo(0), -DEFAULT_DAYS[level.value]); load(); });
  machine.addEventListener("change", () => load());

  // The default range moves to the newest data once when it holds none
  // (a machine last seen weeks ago); a range the user chose stays.
  let autoRange = !query.get("start") && !query.get("end");
  async function newestDay(name) {
    try {
      const rows = await getJSON("stat/day", { machine: name, start: serverDaysAgo(3650), end: serverDaysAgo(0), align: "false" });
      let newest = "";
      for (const r of Array.isArray(rows) ? rows : []) if (String(r.time) > newest) newest = String(r.time);
      return newest ? newest.slice(0, 10) : null;
    } catch (e) {
      return null;
    }
  }

  async function load() {
    const name = machine.value;
    if (!name) return;
    const lv = level.value;
    const params = { machine: name, start: start.value, end: end.value };
    history.replaceState(null, "", `#/h/${encodeURIComponent(name)}?level=${lv}&start=${start.value}&end=${end.value}`);
    csv.href = downloadUrl(`stat/${lv}`, { ...params, format: "csv" });
    csv.setAttribute("download", `${name}_${lv}_${start.value}_${end.value}.csv`);
    if (chart) { chart.destroy(); chart = null; }
    clear(chartBox);
    chartBox.dataset.minPoints = "0";
    chartBox.dataset.series = "0";
    if (start.value > end.value) { clear(out).append(h("p", { class: "error" }, t("bad_range"))); return; }
    clear(out).append(h("p", { class: "muted" }, t("loading")));
    let rows;
    try {
      // Issue 17: the moment statistics too (opt-in; the CSV link keeps the deployed columns).
      rows = await getJSON(`stat/${lv}`, { ...params, fields: STAT_FIELDS.join(",") });
    } catch (e) {
      clear(out).append(h("p", { class: "error" }, t("error", e.message)));
      return;
    }
    rows = Array.isArray(rows) ? rows : [];
    if (!rows.length && autoRange) {
      autoRange = false;
      const newest = await newestDay(name);
      if (newest && newest < start.value) {
        end.value = newest;
        start.value = shiftDate(newest, -DEFAULT_DAYS[lv]);
        return load();
      }
    }
    clear(out);
    out.dataset.rows = String(rows.length);
    out.dataset.level = lv;
    if (!rows.length) { out.append(h("p", { class: "muted" }, t("no_rows"))); return; }
    const series = {};
    for (const r of rows) {
      const sensor = sensorOf(r.name, lv);
      const x = wallSeconds(r.time);
      if (x === null) continue;
      (series[sensor] || (series[sensor] = [])).push({ x, y: r.data === null ? null : Number(r.data) });
    }
    // Month and year rows are drawn as steps to the end of their bucket, so
    // even one month is a line, not a dot.
    const stepped = lv === "month" || lv === "year";
    for (const list of Object.values(series)) {
      list.sort((a, b) => a.x - b.x);
      if (stepped && list.length) list.push({ x: bucketEnd(list[list.length - 1].x, lv), y: list[list.length - 1].y });
    }
    const drawn = Object.values(series).map((list) => list.filter((p) => p.y !== null).length);
    chartBox.dataset.minPoints = String(drawn.length ? Math.min(...drawn) : 0);
    chartBox.dataset.series = String(drawn.length);
    const x0 = wallSeconds(`${start.value} 00:00:00`);
    const x1 = wallSeconds(`${end.value} 00:00:00`) + 86400;
    chart = new HistoryChart(chartBox, { series, stepped, range: x0 !== null && x1 !== null ? [x0, x1] : null });
    const sorted = rows.slice().sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0));
    const shown = sorted.slice(0, MAX_TABLE_ROWS);
    out.append(
      h("p", { class: "muted" }, rows.length > shown.length ? t("showing", shown.length, rows.length) : rowCount(rows.length)),
      h("div", { class: "table-scroll" }, h("table", { class: "rows stats" },
        h("thead", {}, h("tr", {}, h("th", {}, t("time")), h("th", {}, t("sensor")), h("th", { class: "num" }, t("mean")),
          h("th", { class: "num" }, t("min")), h("th", { class: "num" }, t("max")), h("th", { class: "num" }, t("rms")),
          h("th", { class: "num" }, t("count")),
          ...STAT_FIELDS.map((f) => h("th", { class: "num", dataset: { field: f } }, t(f))))),
        h("tbody", {}, shown.map((r) => h("tr", { dataset: { row: "stat" } },
          h("td", {}, wallText(r.time)), h("td", {}, sensorOf(r.name, lv)), h("td", { class: "num" }, num(r.data)),
          h("td", { class: "num" }, num(r.min)), h("td", { class: "num" }, num(r.max)), h("td", { class: "num" }, num(r.rms)),
          h("td", { class: "num" }, r.count === undefined ? "–" : String(r.count)),
          ...STAT_FIELDS.map((f) => h("td", { class: "num", dataset: { field: f } }, num(r[f])))))))));
  }

  const form = h("form", { class: "range", onsubmit: (e) => { e.preventDefault(); load(); } },
    h("label", {}, t("machine"), " ", machine), h("label", {}, t("level"), " ", level),
    h("label", {}, t("start"), " ", start), h("label", {}, t("end"), " ", end),
    h("button", { type: "submit" }, t("load")), csv);
  // A date the user picks is kept (the level selector sets its own default).
  start.addEventListener("change", () => { autoRange = false; });
  end.addEventListener("change", () => { autoRange = false; });
  const el = h("div", { class: "view history" }, h("h1", {}, t("history")), form,
    h("section", { class: "panel" }, chartBox, out));
  // Once the server's calendar is known (at most 2 s) and the view is in the
  // document (the chart needs its width).
  serverClockKnown(2000).then(() => {
    if (!query.get("start")) start.value = serverDaysAgo(DEFAULT_DAYS[level.value]);
    if (!query.get("end")) end.value = serverDaysAgo(0);
    load();
  });
  return { el, destroy() { off(); if (chart) chart.destroy(); } };
}
