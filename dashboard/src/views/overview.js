// Every machine at a glance, and the anomalies of the last 30 days.

import { downloadUrl, getJSON, restState } from "../api.js";
import { age, t } from "../i18n.js";
import { clear, h, num, nowSeconds, serverClockKnown, serverDaysAgo, wallText } from "../util.js";

// The last FaultDetect (live, or from `status` for a page just loaded).
export function anomalyBadge(m, store) {
  const a = m.anomaly;
  if (!a) return h("span", { class: "badge muted", dataset: { anomaly: "none" } }, t("no_anomaly_yet"));
  const over = a.score > a.threshold;
  const when = a.at !== null && store ? ` · ${age(store.since(a.at))}` : "";
  return h("span", {
    class: over ? "badge bad" : "badge good",
    // count: FaultDetects received live by this page (the rest came with `status`).
    dataset: { anomaly: over ? "anomalous" : "normal", score: String(a.score), threshold: String(a.threshold),
      at: a.at === null ? "" : String(a.at), count: String(m.anomalies) },
  }, `${over ? t("anomalous") : t("normal")} ${num(a.score)} / ${num(a.threshold)}${when}`);
}

// The last FaultDetect over threshold (what the anomaly table lists).
export function lastAnomalyText(m, store) {
  const a = m.lastAnomaly;
  if (!a) return null;
  return h("span", {
    class: "last-anomaly",
    dataset: { score: String(a.score), threshold: String(a.threshold), at: a.at === null ? "" : String(a.at) },
  }, `${num(a.score)} / ${num(a.threshold)}${a.at !== null ? ` · ${age(store.since(a.at))}` : ""}`);
}

// `stale`: this page has lost the server (live and REST), so the last known
// DAQ state is shown as unknown rather than as a fact.
export function daqBadge(m, live) {
  const stale = live && live.state !== "connected" && !restState.ok;
  const c = stale ? null : m.connected;
  if (c === null) return h("span", { class: "badge muted", dataset: { daq: "unknown" } }, t("unknown"));
  return h("span", { class: c ? "badge good" : "badge bad", dataset: { daq: c ? "connected" : "offline" } },
    c ? t("daq_connected") : t("daq_offline"));
}

function card(store, m) {
  const alarms = store.alarmsOf(m.name);
  const sensors = Object.keys(m.sensors);
  const last = m.lastSeen;
  const seenText = m.status && (m.status.last_frame_time || m.status.last_seen_time);
  const lastAnomaly = lastAnomalyText(m, store);
  return h("article", { class: "card machine-card", dataset: { machine: m.name } },
    h("header", {},
      h("h2", {}, h("a", { href: `#/m/${encodeURIComponent(m.name)}` }, m.name)),
      daqBadge(m, store.live)),
    h("dl", { class: "facts" },
      h("dt", {}, m.connected === false && m.lastFrame === null && last !== null ? t("last_seen") : t("last_frame")),
      h("dd", { class: "last-frame", title: seenText ? String(seenText).slice(0, 19) : null,
        dataset: { lastSeen: last === null ? "" : String(last) } },
      last === null ? t("never") : age(store.since(last))),
      h("dt", {}, t("anomaly")), h("dd", {}, anomalyBadge(m, store)),
      lastAnomaly ? [h("dt", {}, t("last_anomaly")), h("dd", {}, lastAnomaly)] : null,
      store.alarmsSupported ? [
        h("dt", {}, t("alarms")),
        h("dd", {}, alarms.length
          ? h("span", { class: "badge bad", dataset: { alarms: String(alarms.length) } }, String(alarms.length))
          : h("span", { class: "badge good", dataset: { alarms: "0" } }, t("no_alarms"))),
      ] : null,
      m.status && typeof m.status.frames === "number" ? [h("dt", {}, t("frames")), h("dd", {}, String(m.status.frames))] : null,
      m.status && m.status.refused_frames ? [h("dt", {}, t("refused")), h("dd", { class: "warn" }, String(m.status.refused_frames))] : null,
    ),
    h("table", { class: "sensors" },
      h("thead", {}, h("tr", {}, h("th", {}, t("sensor")), h("th", {}, ""), h("th", { class: "num" }, t("mean")))),
      h("tbody", {}, sensors.map((s) => h("tr", { dataset: { sensor: s } },
        h("td", {}, s), h("td", { class: "muted" }, m.sensors[s] || ""),
        h("td", { class: "num", title: m.latest[s] ? String(m.latest[s].time).slice(0, 19) : null,
          dataset: { value: m.latest[s] ? String(m.latest[s].data) : "" } },
        m.latest[s] ? num(m.latest[s].data) : "–"))))),
    h("nav", { class: "card-links" },
      h("a", { href: `#/m/${encodeURIComponent(m.name)}` }, t("live_link")),
      h("a", { href: `#/h/${encodeURIComponent(m.name)}` }, t("history"))));
}

export function overviewView(ctx) {
  const { store } = ctx;
  const grid = h("section", { class: "grid machines", id: "machines" });
  const recentBody = h("div", { class: "recent" }, t("loading"));
  let start = serverDaysAgo(30);
  let end = serverDaysAgo(0);
  const el = h("div", { class: "view overview" },
    h("h1", {}, t("machines")), grid,
    h("section", { class: "panel" },
      h("header", { class: "panel-head" },
        h("h2", {}, t("recent_anomalies")),
        h("a", { class: "csv", href: downloadUrl("stat/anomaly/all", { start, end, format: "csv" }), download: "" }, t("csv"))),
      recentBody));

  const render = () => {
    clear(grid);
    const machines = [...store.machines.values()].sort((a, b) => a.name.localeCompare(b.name));
    if (!machines.length) {
      grid.append(h("p", { class: "empty" }, store.loaded ? t("no_machines") : t("loading")));
    }
    for (const m of machines) grid.append(card(store, m));
  };
  render();
  const off = store.onChange(render);
  const tick = setInterval(render, 1000); // ages

  const csvLink = el.querySelector("a.csv");
  const loadTable = () => {
    start = serverDaysAgo(30);
    end = serverDaysAgo(0);
    csvLink.href = downloadUrl("stat/anomaly/all", { start, end, format: "csv" });
    return getJSON("stat/anomaly/all", { start, end }).then((rows) => {
      clear(recentBody);
      rows = Array.isArray(rows) ? rows.slice(0, 20) : [];
      if (!rows.length) { recentBody.append(h("p", { class: "muted" }, t("no_rows"))); return; }
      recentBody.append(anomalyTable(rows, true));
    }).catch((e) => { clear(recentBody).append(h("p", { class: "error" }, t("error", e.message))); });
  };
  serverClockKnown(2000).then(loadTable);
  // A live anomaly reaches the cards at once; the table follows (once the
  // store has written it), so the two agree.
  let seenSeq = store.anomalySeq;
  let reload = null;
  const offAnomaly = store.onChange(() => {
    if (store.anomalySeq === seenSeq) return;
    seenSeq = store.anomalySeq;
    clearTimeout(reload);
    reload = setTimeout(loadTable, 1500);
  });

  return { el, destroy() { off(); offAnomaly(); clearTimeout(reload); clearInterval(tick); } };
}

export function anomalyTable(rows, withName) {
  return h("div", { class: "table-scroll" }, h("table", { class: "rows anomalies" },
    h("thead", {}, h("tr", {},
      h("th", {}, t("time")), withName ? h("th", {}, t("machine_name")) : null,
      h("th", { class: "num" }, t("score")), h("th", { class: "num" }, t("threshold")))),
    h("tbody", {}, rows.map((r) => h("tr", { dataset: { row: "anomaly" }, class: r.score > r.threshold ? "bad-row" : "" },
      h("td", {}, wallText(r.time)),
      withName ? h("td", {}, h("a", { href: `#/m/${encodeURIComponent(r.name)}` }, r.name)) : null,
      h("td", { class: "num" }, num(r.score)), h("td", { class: "num" }, num(r.threshold)))))));
}
