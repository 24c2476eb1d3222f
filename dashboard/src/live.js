// The Socket.IO side: one Manager (one connection, multiplexed) for the
// root namespace and every /sio/<machine> namespace this page uses.

import { Manager } from "socket.io-client";
import { basePath, token } from "./api.js";

const EVENTS = ["initialize", "update", "second", "anomaly", "status", "alarm", "spectrum"];
const RETRY_NAMESPACE_MS = 10000;

export class Live {
  constructor({ onUnauthorized } = {}) {
    this.state = "connecting";
    this.attempt = 0;
    this.listeners = new Set();
    this.channels = new Map();
    this.onUnauthorized = onUnauthorized || (() => {});
    const tok = token();
    this.socketOptions = tok ? { auth: { token: tok } } : {};
    this.manager = new Manager(location.origin, {
      path: basePath() + "socket.io/",
      query: tok ? { token: tok } : {},
      reconnectionDelay: 1000,
      reconnectionDelayMax: 10000,
      timeout: 10000,
    });
    const m = this.manager;
    m.on("open", () => { this.attempt = 0; this.set("connected"); });
    m.on("close", () => this.set(navigator.onLine === false ? "offline" : "reconnecting"));
    m.on("error", () => { if (this.state !== "offline") this.set("reconnecting"); });
    m.on("reconnect_attempt", (n) => { this.attempt = n; if (navigator.onLine !== false) this.set("reconnecting"); });
    m.on("reconnect_failed", () => this.set("offline"));
    window.addEventListener("offline", () => this.set("offline"));
    window.addEventListener("online", () => { if (this.state === "offline") this.set("reconnecting"); });
    // The root namespace keeps the connection (and so its state) alive even
    // while no machine namespace is open.
    this.root = m.socket("/", this.socketOptions);
    this.root.on("connect_error", (err) => this.namespaceError(err));
  }

  set(state) {
    if (state === this.state) return;
    this.state = state;
    for (const fn of this.listeners) fn(state, this.attempt);
  }

  onState(fn) {
    this.listeners.add(fn);
    fn(this.state, this.attempt);
    return () => this.listeners.delete(fn);
  }

  namespaceError(err) {
    const text = String((err && err.message) || err || "").toLowerCase();
    if (/unauthori|forbidden|token|401|403/.test(text)) this.onUnauthorized();
  }

  channel(machine) {
    let ch = this.channels.get(machine);
    if (!ch) {
      ch = new MachineChannel(this, machine);
      this.channels.set(machine, ch);
    }
    return ch;
  }
}

export class MachineChannel {
  constructor(live, machine) {
    this.live = live;
    this.machine = machine;
    this.handlers = new Map();
    this.connected = false;
    this.error = "";
    this.socket = live.manager.socket("/sio/" + machine, live.socketOptions);
    const s = this.socket;
    for (const ev of EVENTS) s.on(ev, (data) => this.dispatch(ev, data));
    s.on("connect", () => {
      this.connected = true;
      this.error = "";
      s.emit("status"); // answered with a `status` event
      this.dispatch("connect");
    });
    s.on("disconnect", (reason) => {
      this.connected = false;
      this.dispatch("disconnect", reason);
    });
    s.on("connect_error", (err) => {
      // A refused namespace (unknown machine, bad token) is not retried by
      // socket.io-client itself; a lost connection is.
      this.connected = false;
      this.error = (err && err.message) || "connect error";
      this.dispatch("disconnect", this.error);
      live.namespaceError(err);
      if (!s.active) setTimeout(() => { if (!s.connected && !s.active) s.connect(); }, RETRY_NAMESPACE_MS);
    });
  }

  on(event, fn) {
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  dispatch(event, data) {
    const set = this.handlers.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(data); } catch (e) { console.error(`tsrmon: ${event} handler failed`, e); }
    }
  }

  emit(event, ...args) {
    this.socket.emit(event, ...args);
  }
}
