// One machine: DAQ and anomaly state, a live chart per sensor, alarms and the
// anomaly history for a date range.

import { downloadUrl, getJSON } from "../api.js";
import { LiveChart } from "../charts.js";
import { age, rows as rowCount, t } from "../i18n.js";
import { clear, h, num, nowSeconds, put, serverClockKnown, serverDaysAgo, wallSeconds, wallText } from "../util.js";
import { analyticsPanel } from "./analytics.js";
import { anomalyBadge, anomalyTable, daqBadge, lastAnomalyText } from "./overview.js";

function items(data) {
  // `second` may carry one payload or a list of them (defensive).
  if (Array.isArray(data)) return data;
  return data && typeof data === "object" ? [data] : [];
}

export function machineView(ctx, name) {
  const { store, live } = ctx;
  const m = store.machine(name);
  const ch = live.channel(name);
  const charts = new Map();
  const subscribed = new Set();
  const offs = [];

  const head = h("div", { class: "machine-head" });
  const indicator = h("section", { class: "panel anomaly-indicator", id: "anomaly-indicator" });
  const alarmsPanel = h("section", { class: "panel alarms-panel" });
  const chartGrid = h("section", { class: "grid charts", id: "live-charts" });
  const history = anomalyHistory(name);
  const analytics = analyticsPanel(name, ch); // issue 17: spectrum, waterfall, velocity RMS
  const el = h("div", { class: "view machine", dataset: { machine: name } },
    head, h("div", { class: "row2" }, indicator, alarmsPanel),
    h("h2", {}, t("live_charts")), chartGrid, analytics.el, history.el);

  function chart(sensor) {
    let c = charts.get(sensor);
    if (c) return c;
    const value = h("span", { class: "latest num" }, "–");
    const box = h("div", { class: "chart", dataset: { sensor } });
    const cardEl = h("article", { class: "card chart-card", dataset: { sensor } },
      h("header", {}, h("h3", {}, sensor), h("span", { class: "muted" }, m.sensors[sensor] || ""), value),
      box);
    chartGrid.append(cardEl);
    c = { chart: new LiveChart(box, { labels: { second: t("per_second"), update: t("interval_mean") } }), value };
    charts.set(sensor, c);
    subscribe([sensor]);
    return c;
  }

  function subscribe(sensors) {
    const fresh = sensors.filter((s) => !subscribed.has(s));
    if (!fresh.length || !ch.connected) return;
    for (const s of fresh) subscribed.add(s);
    ch.emit("subscribe", fresh);
  }

  function onConnect() {
    // Subscriptions live in the server-side session: renew after a reconnect.
    subscribed.clear();
    ch.emit("initialize", null);
    subscribe([...charts.keys(), ...Object.keys(m.sensors)]);
  }

  function point(series, p) {
    if (!p || typeof p.sensor_name !== "string") return;
    const c = chart(p.sensor_name);
    c.chart.add(series, wallSeconds(p.time), p.data);
    if (series === 1 || !subscribed.size) c.value.textContent = num(p.data);
  }

  offs.push(ch.on("initialize", (list) => { for (const p of items(list)) point(2, p); }));
  offs.push(ch.on("update", (p) => point(2, p)));
  offs.push(ch.on("second", (data) => { for (const p of items(data)) point(1, p); }));
  offs.push(ch.on("connect", onConnect));
  if (ch.connected) onConnect();

  function renderHead() {
    const last = m.lastSeen;
    put(clear(head),
      h("h1", {}, name), daqBadge(m, live),
      h("span", { class: "last-frame" }, `${t("last_frame")}: ${last === null ? t("never") : age(store.since(last))}`),
      h("a", { class: "button", href: `#/h/${encodeURIComponent(name)}` }, t("history")));
    const a = m.anomaly;
    put(clear(indicator), h("h2", {}, t("anomaly")), anomalyBadge(m, store),
      a ? h("p", { class: "muted" }, `${t("score")} ${num(a.score)} · ${t("threshold")} ${num(a.threshold)}${a.at !== null ? ` · ${t("received")} ${age(store.since(a.at))}` : ""}`) : null,
      m.lastAnomaly && m.lastAnomaly !== a ? h("p", { class: "muted" }, `${t("last_anomaly")}: `, lastAnomalyText(m, store)) : null);
    indicator.dataset.state = a ? (a.score > a.threshold ? "anomalous" : "normal") : "none";
    indicator.dataset.count = String(m.anomalies);
    renderAlarms();
    for (const s of Object.keys(m.sensors)) chart(s);
  }

  function renderAlarms() {
    clear(alarmsPanel).append(h("h2", {}, t("alarms")));
    if (!store.alarmsSupported) {
      alarmsPanel.append(h("p", { class: "muted" }, t("alarms_unavailable")));
    } else {
      const active = store.alarmsOf(name);
      alarmsPanel.append(active.length ? alarmTable(active) : h("p", { class: "muted" }, t("no_alarms")));
    }
    if (m.alarmEvents.length) alarmsPanel.append(h("h3", {}, t("live_alarms")), alarmTable(m.alarmEvents.slice(0, 10)));
  }

  renderHead();
  offs.push(store.onChange(renderHead));
  const tick = setInterval(renderHead, 1000);

  return {
    el,
    destroy() {
      clearInterval(tick);
      analytics.destroy();
      for (const off of offs) off();
      if (ch.connected && subscribed.size) ch.emit("unsubscribe");
      for (const c of charts.values()) c.chart.destroy();
    },
  };
}

function alarmTable(alarms) {
  const text = (v) => (v === undefined || v === null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
  return h("div", { class: "table-scroll" }, h("table", { class: "rows alarms" },
    h("thead", {}, h("tr", {}, h("th", {}, t("state")), h("th", {}, t("severity")), h("th", {}, t("rule")),
      h("th", {}, t("sensor")), h("th", { class: "num" }, t("value")), h("th", { class: "num" }, t("alarm_level")),
      h("th", {}, t("time")), h("th", {}, t("message")))),
    h("tbody", {}, alarms.map((a) => h("tr", { dataset: { row: "alarm" }, class: `sev-${text(a.severity).toLowerCase()}` },
      h("td", {}, text(a.event || a.state || a.status)), h("td", {}, text(a.severity)), h("td", {}, text(a.rule)),
      h("td", {}, text(a.sensor)), h("td", { class: "num" }, typeof a.value === "number" ? num(a.value) : text(a.value)),
      h("td", { class: "num" }, typeof a.level === "number" ? num(a.level) : text(a.level)),
      h("td", {}, wallText(text(a.time || a.raised || a.raised_at || a.since).replace("T", " "))),
      h("td", {}, text(a.message)))))));
}

function anomalyHistory(name) {
  const start = h("input", { type: "date", name: "start", value: serverDaysAgo(7) });
  const end = h("input", { type: "date", name: "end", value: serverDaysAgo(0) });
  const csv = h("a", { class: "csv", download: "" }, t("csv"));
  const out = h("div", { class: "history-rows" });
  const load = async () => {
    const params = { machine: name, start: start.value, end: end.value };
    csv.href = downloadUrl("stat/anomaly", { ...params, format: "csv" });
    if (start.value > end.value) { clear(out).append(h("p", { class: "error" }, t("bad_range"))); return; }
    clear(out).append(h("p", { class: "muted" }, t("loading")));
    try {
      const rows = await getJSON("stat/anomaly", params);
      clear(out);
      if (!Array.isArray(rows) || !rows.length) { out.append(h("p", { class: "muted" }, t("no_rows"))); return; }
      out.append(h("p", { class: "muted" }, rowCount(rows.length)), anomalyTable(rows.slice().reverse().slice(0, 500), false));
    } catch (e) {
      clear(out).append(h("p", { class: "error" }, t("error", e.message)));
    }
  };
  const form = h("form", { class: "range", onsubmit: (e) => { e.preventDefault(); load(); } },
    h("label", {}, t("start"), " ", start), h("label", {}, t("end"), " ", end),
    h("button", { type: "submit" }, t("load")), csv);
  let edited = false;
  form.addEventListener("change", () => { edited = true; });
  // The default range is in the server's calendar once its clock is known.
  serverClockKnown(2000).then(() => {
    if (!edited) { start.value = serverDaysAgo(7); end.value = serverDaysAgo(0); }
    load();
  });
  return { el: h("section", { class: "panel anomaly-history" }, h("h2", {}, t("anomaly_history")), form, out) };
}
