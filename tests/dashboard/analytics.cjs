// node analytics.cjs <base url> <artifacts dir> <machine> [timeout ms]
// Issue 17: the machine page's vibration analysis in Debian's headless
// Chromium (playwright-core): waits for the spectrum, the waterfall and the
// velocity RMS chart, reads what they show (DOM data attributes and canvas
// pixels), the History table's new columns, takes screenshots, and prints one
// JSON object. Exit 0 = observations printed; 2 = no browser at all.
const path = require("path");
const { chromium } = require("playwright-core");

const [base, artifacts, machine, timeoutArg] = process.argv.slice(2);
const TIMEOUT = Number(timeoutArg || 150000);
const CHROMIUM = process.env.TSRMON_CHROMIUM || "/usr/bin/chromium";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"];
const baseHost = new URL(base).host;

// How many pixels of a canvas are not the background (something was drawn).
function inked(canvas) {
  const ctx = canvas.getContext("2d");
  const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
  let n = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
  return n;
}

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
  const out = { foreign_requests: [], page_errors: [], console_errors: [], screenshots: [] };
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: "en-US" });
    const page = await context.newPage();
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (u.protocol !== "data:" && u.host !== baseHost) out.foreign_requests.push(r.url());
    });
    page.on("pageerror", (e) => out.page_errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(m.text()); });
    const shot = async (name, selector) => {
      const file = path.join(artifacts, name);
      if (selector) await (await page.$(selector)).screenshot({ path: file });
      else await page.screenshot({ path: file, fullPage: true });
      out.screenshots.push(file);
    };
    const started = Date.now();
    await page.goto(`${base}/#/m/${encodeURIComponent(machine)}`, { waitUntil: "load" });
    // The page refreshes every 30 s until the first minute spectrum exists.
    await page.waitForSelector(".analytics-card canvas.spectrum[data-lines]", { timeout: TIMEOUT });
    await page.waitForSelector(".analytics-card .velocity-chart[data-points]:not([data-points='0'])", { timeout: 40000 });
    await page.waitForSelector(".analytics-card canvas.waterfall[data-rows]:not([data-rows='0'])", { timeout: 40000 });
    out.waited_ms = Date.now() - started;
    await page.waitForTimeout(500);
    out.cards = await page.$$eval(".analytics-card", (cards, inkedSrc) => {
      const inkedFn = new Function(`return (${inkedSrc})`)();
      return cards.map((c) => {
        const spec = c.querySelector("canvas.spectrum");
        const wf = c.querySelector("canvas.waterfall");
        const vel = c.querySelector(".velocity-chart");
        return {
          sensor: c.dataset.sensor,
          spectrum: { ...spec.dataset, inked: inkedFn(spec) },
          labels: [...c.querySelectorAll(".peak-labels li")].map((li) => ({ ...li.dataset, text: li.textContent })),
          waterfall: { ...wf.dataset, inked: inkedFn(wf), width: wf.width, height: wf.height },
          velocity: { ...vel.dataset, canvases: vel.querySelectorAll("canvas").length },
          zone_badge: c.querySelector(".iso-zone").textContent,
          iso_note: c.querySelector(".iso-note").textContent,
        };
      });
    }, inked.toString());
    await shot("analytics-machine.png");
    await shot("analytics-card.png", ".analytics-card");
    // The next minute comes as a live `spectrum` event (subscribe_spectrum).
    // (Right after subscribing, the same minute comes live too: wait for a newer one.)
    const restT0 = Number(await page.getAttribute(".analytics-card canvas.spectrum", "data-t0"));
    await page.waitForFunction((t0) => {
      const c = document.querySelector(".analytics-card canvas.spectrum");
      return c && c.dataset.source === "live" && Number(c.dataset.t0) > t0;
    }, restT0, { timeout: 100000 });
    out.live = await page.$eval(".analytics-card canvas.spectrum", (c) => ({ ...c.dataset }));
    out.rest_t0 = restT0;
    // History: the new statistics columns.
    await page.goto(`${base}/#/h/${encodeURIComponent(machine)}?level=hour`, { waitUntil: "load" });
    await page.waitForSelector("#history-rows[data-rows]", { timeout: 15000 });
    out.history_fields = await page.$$eval("table.stats th[data-field]", (ths) => ths.map((th) => th.dataset.field));
    out.history_rows = await page.$$eval("tr[data-row=stat]", (rows) => rows.slice(0, 20).map((r) => ({
      time: r.children[0].textContent, sensor: r.children[1].textContent,
      fields: Object.fromEntries([...r.querySelectorAll("td[data-field]")].map((td) => [td.dataset.field, td.textContent])),
    })));
    await shot("analytics-history.png");
  } catch (e) {
    out.error = String((e && e.stack) || e);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => { console.error(e); process.exit(2); });
