// Small DOM and time helpers. Text always goes through textContent (names
// come from DAQs and must never be parsed as HTML).

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// The server sends local naive time text ("YYYY-MM-DD HH:MM:SS[.ffffff]") in
// its TIME.ZONE. Charts place it as if it were UTC and draw their axes in UTC,
// so the clock shown is the server's clock whatever the browser's zone is.
const TIME_RE = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?/;

export function wallSeconds(text) {
  if (typeof text === "number") return text;
  const m = TIME_RE.exec(String(text || ""));
  if (!m) return null;
  const ms = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
  const frac = m[7] ? Number("0." + m[7]) : 0;
  return ms / 1000 + frac;
}

export function wallText(text) {
  // Trim the microseconds for display.
  const s = String(text || "");
  return s.length > 19 ? s.slice(0, 19) : s;
}

export function num(v, digits = 4) {
  if (v === null || v === undefined || v === "") return "–";
  const n = Number(v);
  if (!Number.isFinite(n)) return "–";
  if (n === 0) return "0";
  const a = Math.abs(n);
  if (a >= 1e5 || a < 1e-3) return n.toExponential(2);
  return Number(n.toPrecision(digits)).toString();
}

export function isoDate(d) {
  const p = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

export function daysAgo(n) {
  const d = new Date();
  d.setDate(d.getDate() - n);
  return isoDate(d);
}

export function nowSeconds() {
  return Date.now() / 1000;
}

// The server's calendar: its TIME.ZONE offset, learnt from a live event that
// carries both its wall-clock text and the epoch (or, failing that, from an
// event's text and this browser's clock, rounded to a quarter hour). Default
// date ranges use the server's "today", which may differ from the browser's.
let serverOffset = null;
const clockWaiters = [];

export function learnServerClock(text, epoch) {
  if (serverOffset !== null && epoch === undefined) return;
  const wall = wallSeconds(text);
  const at = typeof epoch === "number" ? epoch : nowSeconds();
  if (wall === null || !Number.isFinite(at)) return;
  serverOffset = Math.round((wall - at) / 900) * 900;
  while (clockWaiters.length) clockWaiters.shift()();
}

export function serverClockKnown(timeoutMs) {
  if (serverOffset !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    clockWaiters.push(() => { clearTimeout(timer); resolve(true); });
  });
}

export function serverDaysAgo(n) {
  if (serverOffset === null) return daysAgo(n);
  const d = new Date((nowSeconds() + serverOffset) * 1000);
  d.setUTCDate(d.getUTCDate() - n);
  return d.toISOString().slice(0, 10);
}

export function put(el, ...children) {
  append(el, children);
  return el;
}
