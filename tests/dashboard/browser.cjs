// node browser.cjs <scenario> <base url> <artifacts dir> [arg]
// Drives Debian's headless Chromium through playwright-core against a running
// tsrmon and prints one JSON object (the observations) on stdout; the Python
// tests assert on it. Exit 0 = observations printed (even if the page
// misbehaved); 2 = the browser could not be driven at all.
const path = require("path");
const { chromium } = require("playwright-core");

const [scenario, base, artifacts, arg] = process.argv.slice(2);
const CHROMIUM = process.env.TSRMON_CHROMIUM || "/usr/bin/chromium";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"];
const baseHost = new URL(base).host;

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
  const out = { scenario, foreign_requests: [], page_errors: [], console_errors: [] };
  try {
    const context = await browser.newContext({
      viewport: { width: 1280, height: 900 }, acceptDownloads: true,
      locale: arg === "ko" ? "ko-KR" : "en-US",
    });
    const page = await context.newPage();
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (u.protocol !== "data:" && u.host !== baseHost) out.foreign_requests.push(r.url());
    });
    page.on("pageerror", (e) => out.page_errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(m.text()); });
    const shot = async (name, full = true) => {
      const file = path.join(artifacts, name);
      await page.screenshot({ path: file, fullPage: full });
      (out.screenshots = out.screenshots || []).push(file);
    };
    await SCENARIOS[scenario](page, out, shot, context);
  } catch (e) {
    out.error = String((e && e.stack) || e);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

const SCENARIOS = {
  // The machine cards, in three widths, and the live connection state.
  async overview(page, out, shot) {
    await page.goto(base + "/", { waitUntil: "load" });
    out.title = await page.title();
    out.dashboard = await page.getAttribute("body", "data-tsrmon-dashboard");
    await page.waitForSelector(".machine-card", { timeout: 10000 });
    await page.waitForSelector('#conn[data-state="connected"]', { timeout: 10000 });
    // Wait until every card knows its DAQ state (REST or `status` event).
    await page.waitForFunction(() => [...document.querySelectorAll(".machine-card [data-daq]")]
      .every((b) => b.dataset.daq !== "unknown"), null, { timeout: 10000 });
    out.conn = await page.getAttribute("#conn", "data-state");
    out.machines = await page.$$eval(".machine-card", (cards) => cards.map((c) => ({
      name: c.dataset.machine,
      daq: c.querySelector("[data-daq]").dataset.daq,
      sensors: [...c.querySelectorAll("tr[data-sensor]")].map((r) => r.dataset.sensor),
      last_frame: c.querySelector(".last-frame").textContent,
    })));
    await page.waitForTimeout(1500); // let the live values arrive before the pictures
    await shot("overview.png");
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(300);
    await shot("overview-phone.png");
    await page.setViewportSize({ width: 2560, height: 1440 });
    await page.waitForTimeout(300);
    await shot("overview-wall.png", false);
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.click("#lang");
    await page.waitForTimeout(300);
    out.lang_after_toggle = await page.getAttribute("html", "lang");
    out.conn_text_after_toggle = await page.textContent("#conn");
    await shot("overview-toggled-language.png", false);
  },

  // A machine page: one chart per sensor, receiving points.
  async live(page, out, shot) {
    await page.goto(`${base}/#/m/${encodeURIComponent(arg)}`, { waitUntil: "load" });
    await page.waitForFunction(() => {
      const c = document.querySelectorAll(".chart[data-sensor]");
      return c.length && [...c].every((el) => Number(el.dataset.points) > 0);
    }, null, { timeout: 10000 });
    const counts = () => page.$$eval(".chart[data-sensor]", (els) =>
      Object.fromEntries(els.map((el) => [el.dataset.sensor, Number(el.dataset.points)])));
    out.points_first = await counts();
    // New points after the first ones: per-second stream and interval updates.
    await page.waitForFunction((first) => [...document.querySelectorAll(".chart[data-sensor]")]
      .every((el) => Number(el.dataset.points) >= (first[el.dataset.sensor] || 0) + 2), out.points_first, { timeout: 10000 });
    out.points_later = await counts();
    out.canvases = await page.$$eval(".chart[data-sensor] canvas", (c) => c.map((x) => [x.width, x.height]));
    await page.waitForTimeout(3000); // a few more seconds of the stream for the picture
    await shot("machine.png");
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(500);
    await shot("machine-phone.png");
  },

  // Waits (bounded by the caller) for an `anomaly` event of any machine (a
  // badge painted from `status` alone has data-count 0).
  async anomaly(page, out, shot) {
    const timeout = Number(process.env.TSRMON_ANOMALY_WAIT_MS || 45000);
    await page.goto(base + "/", { waitUntil: "load" });
    await page.waitForSelector(".machine-card", { timeout: 10000 });
    const handle = await page.waitForSelector(
      '.machine-card [data-anomaly]:not([data-anomaly="none"]):not([data-count="0"])', { timeout });
    const card = await handle.evaluateHandle((b) => b.closest(".machine-card"));
    out.machine = await card.evaluate((c) => c.dataset.machine);
    out.badge = await handle.evaluate((b) => ({ ...b.dataset, text: b.textContent }));
    await shot("overview-anomaly.png");
    // Same page (same live state): the machine's own indicator.
    await page.evaluate((m) => { location.hash = `#/m/${encodeURIComponent(m)}`; }, out.machine);
    await page.waitForSelector('#anomaly-indicator:not([data-state="none"])', { timeout: 5000 });
    out.indicator = await page.$eval("#anomaly-indicator", (el) => ({
      state: el.dataset.state, count: Number(el.dataset.count), text: el.textContent }));
    await page.waitForSelector(".anomaly-history table, .anomaly-history p:not(:empty)", { timeout: 5000 });
    await shot("machine-anomaly.png");
  },

  // The first paint after a page load (LIVE.INTERVAL 60: no `update` comes
  // for a minute): waits for what TSRMON_EXPECT names and reports when, in
  // ms since navigation start, it was all on screen.
  // TSRMON_EXPECT = {"values": {machine: [sensor...]}, "anomaly": [machine...], "seen": [machine...]}
  async firstpaint(page, out, shot) {
    const expect = JSON.parse(process.env.TSRMON_EXPECT || "{}");
    await page.goto(base + "/", { waitUntil: "commit" });
    const ready = await page.waitForFunction((exp) => {
      const card = (name) => document.querySelector(`.machine-card[data-machine="${CSS.escape(name)}"]`);
      for (const [name, sensors] of Object.entries(exp.values || {})) {
        const c = card(name);
        if (!c) return false;
        for (const s of sensors) {
          const cell = c.querySelector(`tr[data-sensor="${CSS.escape(s)}"] td[data-value]`);
          if (!cell || cell.dataset.value === "") return false;
        }
      }
      for (const name of exp.anomaly || []) {
        const c = card(name);
        const badge = c && c.querySelector("[data-anomaly]");
        if (!badge || badge.dataset.anomaly === "none" || !c.querySelector(".last-anomaly")) return false;
      }
      for (const name of exp.seen || []) {
        const c = card(name);
        const dd = c && c.querySelector(".last-frame");
        const daq = c && c.querySelector("[data-daq]");
        if (!dd || !dd.dataset.lastSeen || !daq || daq.dataset.daq === "unknown") return false;
      }
      return performance.now();
    }, expect, { timeout: 15000, polling: "raf" });
    out.ms = await ready.jsonValue();
    out.machines = await page.$$eval(".machine-card", (cards) => cards.map((c) => ({
      name: c.dataset.machine,
      daq: c.querySelector("[data-daq]").dataset.daq,
      values: Object.fromEntries([...c.querySelectorAll("tr[data-sensor]")].map((r) =>
        [r.dataset.sensor, r.querySelector("td[data-value]").dataset.value])),
      anomaly: { ...c.querySelector("[data-anomaly]").dataset },
      last_anomaly: c.querySelector(".last-anomaly") ? { ...c.querySelector(".last-anomaly").dataset } : null,
      last_seen: c.querySelector(".last-frame").dataset.lastSeen,
      last_frame_text: c.querySelector(".last-frame").textContent,
    })));
    // The anomaly table of the same page (loaded once the server's calendar is known).
    await page.waitForSelector(".recent table, .recent p", { timeout: 10000 });
    out.table = await page.$$eval("tr[data-row=anomaly]", (rows) => rows.map((r) =>
      [...r.querySelectorAll("td")].map((td) => td.textContent)));
    await shot("overview-first-paint.png");
  },

  // History on first open (no dates in the URL) at the hour, day and month
  // levels: rows, and the fewest points a sensor's line has.
  async historylevels(page, out, shot) {
    await page.goto(`${base}/#/h/${encodeURIComponent(arg)}`, { waitUntil: "load" });
    out.levels = {};
    for (const lv of ["hour", "day", "month"]) {
      if (lv !== "hour") await page.selectOption("select[name=level]", lv);
      await page.waitForSelector(`#history-rows[data-level="${lv}"]`, { timeout: 10000 });
      const box = await page.$(".history-chart");
      out.levels[lv] = {
        rows: Number(await page.getAttribute("#history-rows", "data-rows")),
        min_points: Number(await box.getAttribute("data-min-points")),
        series: Number(await box.getAttribute("data-series")),
        canvas: await page.$$eval(".history-chart canvas", (c) => c.length),
        start: await page.inputValue("input[name=start]"),
        end: await page.inputValue("input[name=end]"),
      };
      await shot(`history-${lv}.png`);
    }
  },

  // History of one machine at the hour level, and its CSV download.
  async history(page, out, shot) {
    await page.goto(`${base}/#/h/${encodeURIComponent(arg)}?level=hour`, { waitUntil: "load" });
    await page.waitForSelector("#history-rows[data-rows]", { timeout: 10000 });
    out.rows_reported = Number(await page.getAttribute("#history-rows", "data-rows"));
    out.table_rows = await page.$$eval("tr[data-row=stat]", (rows) => rows.map((r) =>
      [...r.querySelectorAll("td")].map((td) => td.textContent)));
    out.chart_canvas = await page.$$eval(".history-chart canvas", (c) => c.length);
    out.csv_href = await page.getAttribute("#history-csv", "href");
    await shot("history.png");
    const [download] = await Promise.all([page.waitForEvent("download", { timeout: 10000 }), page.click("#history-csv")]);
    const file = path.join(artifacts, "history-download.csv");
    await download.saveAs(file);
    out.download = { file, suggested: download.suggestedFilename(), failure: await download.failure() };
  },
};

main().catch((e) => { console.error(e); process.exit(2); });
