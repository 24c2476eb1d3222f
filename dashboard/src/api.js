// REST calls to the daemon that serves this page. URLs are relative to the
// page, so a reverse proxy may mount tsrmon under a prefix.

const TOKEN_KEY = "tsrmon.token";

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
}

export function setToken(value) {
  try {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  } catch (e) { /* storage disabled: the token lives until reload */ }
}

export function basePath() {
  // "/" when served at the root, "/tsrmon/" behind a prefix.
  const p = location.pathname;
  return p.endsWith("/") ? p : p.slice(0, p.lastIndexOf("/") + 1);
}

export function url(path, params) {
  const u = new URL(path.replace(/^\//, ""), location.origin + basePath());
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") u.searchParams.set(k, v);
  }
  return u;
}

// A link that works without headers (downloads): the token goes in ?token=.
export function downloadUrl(path, params) {
  const tok = token();
  return url(path, tok ? { ...params, token: tok } : params).toString();
}

const listeners = new Set();
export const restState = { ok: true, unauthorized: false, lastError: "" };

export function onRestState(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function report(ok, unauthorized, message) {
  const changed = restState.ok !== ok || restState.unauthorized !== unauthorized;
  restState.ok = ok;
  restState.unauthorized = unauthorized;
  restState.lastError = message || "";
  if (changed) for (const fn of listeners) fn(restState);
}

// GET JSON. A 404 resolves to `undefined` when `optional` is set (routes such
// as /alarms exist only on some servers).
export async function getJSON(path, params, { optional = false, signal } = {}) {
  const headers = { Accept: "application/json" };
  const tok = token();
  if (tok) headers.Authorization = `Bearer ${tok}`;
  let response;
  try {
    response = await fetch(url(path, params), { headers, signal, cache: "no-store" });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    report(false, false, e.message);
    throw new HttpError(0, e.message || "network error");
  }
  if (response.status === 401 || response.status === 403) {
    report(true, true, "unauthorized");
    throw new HttpError(response.status, "unauthorized");
  }
  if (response.status === 404 && optional) {
    report(true, false);
    return undefined;
  }
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error;
    } catch (e) { /* not JSON */ }
    report(response.status < 500, false, message);
    throw new HttpError(response.status, message);
  }
  report(true, false);
  return response.json();
}
