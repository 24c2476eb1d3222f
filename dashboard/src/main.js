// The page shell: header (navigation, live/REST state, language, token),
// a hash router (#/, #/m/<machine>, #/h/<machine>?level=&start=&end=) and the
// token dialog.

import "./style.css";
import { onRestState, restState, setToken, token } from "./api.js";
import { language, setLanguage, t, toggleLanguage } from "./i18n.js";
import { Live } from "./live.js";
import { Store } from "./state.js";
import { clear, h } from "./util.js";
import { historyView } from "./views/history.js";
import { machineView } from "./views/machine.js";
import { overviewView } from "./views/overview.js";

const app = document.getElementById("app");
let current = null;
let tokenDialogOpen = false;

setLanguage(language());
const live = new Live({ onUnauthorized: askToken });
const store = new Store(live);
const ctx = { live, store };

const connBadge = h("span", { id: "conn", class: "badge muted", role: "status", "aria-live": "polite" });
const restBadge = h("span", { id: "rest", class: "badge bad", hidden: true });
const header = h("header", { class: "top" });
const main = h("main", { id: "view" });
app.append(header, main);

function renderHeader() {
  clear(header).append(
    h("a", { class: "brand", href: "#/" }, t("title")),
    h("nav", {}, h("a", { href: "#/" }, t("overview")), h("a", { href: "#/h/" }, t("history"))),
    h("div", { class: "status" }, connBadge, restBadge),
    h("div", { class: "tools" },
      token() ? h("button", { type: "button", class: "link", onclick: () => { setToken(""); location.reload(); } }, t("token_clear")) : null,
      h("button", { type: "button", id: "lang", class: "link", onclick: () => { toggleLanguage(); renderHeader(); route(); } }, t("language"))));
  renderConn(live.state, live.attempt);
  renderRest(restState);
}

function renderConn(state, attempt) {
  if (navigator.onLine === false) state = "offline";
  connBadge.dataset.state = state;
  connBadge.className = `badge ${state === "connected" ? "good" : state === "offline" ? "bad" : "warn"}`;
  connBadge.textContent = t(`conn_${state}`) + (state === "reconnecting" && attempt ? ` (${attempt})` : "");
}

function renderRest(s) {
  restBadge.hidden = s.ok;
  restBadge.textContent = t("rest_error");
  restBadge.title = s.lastError || "";
  if (s.unauthorized) askToken();
}

function route() {
  if (current) current.destroy();
  current = null;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = hash.split("?");
  const query = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "m" && parts[1]) current = machineView(ctx, parts[1]);
  else if (parts[0] === "h") current = historyView(ctx, parts[1] || "", query);
  else current = overviewView(ctx);
  clear(main).append(current.el);
  document.title = parts[1] ? `${parts[1]} · tsrmon` : "tsrmon";
}

function askToken() {
  if (tokenDialogOpen) return;
  tokenDialogOpen = true;
  const input = h("input", { type: "password", name: "token", autocomplete: "off", required: true });
  const dialog = h("div", { class: "modal", id: "token-dialog", role: "dialog", "aria-modal": "true" },
    h("form", { class: "panel", onsubmit: (e) => { e.preventDefault(); setToken(input.value.trim()); location.reload(); } },
      h("h2", {}, t("token_title")), h("p", {}, t("token_text")), input,
      h("button", { type: "submit" }, t("token_save"))));
  document.body.append(dialog);
  input.focus();
}

live.onState(renderConn);
onRestState(renderRest);
window.addEventListener("online", () => renderConn(live.state, live.attempt));
window.addEventListener("offline", () => renderConn("offline", 0));
window.addEventListener("hashchange", route);
renderHeader();
route();
store.start();
