// What the page knows about every machine, from REST (/machines, /alarms)
// and the live events of each /sio/<machine> namespace.

import { getJSON } from "./api.js";
import { learnServerClock, nowSeconds } from "./util.js";

const POLL_MS = 2000; // /machines: last frame ages stay within ~2 s
const ALARM_POLL_MS = 10000;

export class MachineState {
  constructor(name) {
    this.name = name;
    this.status = null; // the /machines item, merged with `status` events
    this.sensors = {}; // name -> type
    this.latest = {}; // sensor -> {data, time}
    this.anomaly = null; // the last FaultDetect: {score, threshold, at (server epoch)}
    this.lastAnomaly = null; // the last one over threshold, same shape
    this.anomalies = 0;
    this.alarmEvents = []; // live `alarm` payloads, newest first
  }

  get connected() {
    return this.status ? Boolean(this.status.connected) : null;
  }

  get lastFrame() {
    const s = this.status;
    return s && typeof s.last_frame === "number" ? s.last_frame : null;
  }

  // The last frame of this run, else the newest stored minute or fault
  // (`status`.last_seen): a machine of an earlier run is not "never" seen.
  get lastSeen() {
    const s = this.status;
    if (this.lastFrame !== null) return this.lastFrame;
    return s && typeof s.last_seen === "number" ? s.last_seen : null;
  }
}

// `status`.last_fault / last_anomaly → {score, threshold, at}, or null.
function scoreOf(x) {
  if (!x || typeof x !== "object" || typeof x.score !== "number") return null;
  return { score: Number(x.score), threshold: Number(x.threshold), at: typeof x.t === "number" ? x.t : null };
}

// Keep whichever is newer (a live event may beat the `status` answer).
function newer(a, b) {
  if (!a) return b;
  if (!b) return a;
  return (b.at || 0) >= (a.at || 0) ? b : a;
}

export class Store {
  constructor(live) {
    this.live = live;
    this.machines = new Map();
    this.alarms = null; // null = unknown, undefined = the server has no /alarms
    this.alarmsSupported = true;
    this.loaded = false;
    this.error = "";
    this.listeners = new Set();
    this.timers = [];
    this.notifyPending = false;
    this.skew = 0; // server clock minus this browser's, from /machines
    this.anomalySeq = 0; // bumped by every live anomaly over threshold
  }

  start() {
    this.refresh();
    this.refreshAlarms();
    this.timers.push(setInterval(() => this.refresh(), POLL_MS));
    this.timers.push(setInterval(() => this.refreshAlarms(), ALARM_POLL_MS));
  }

  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  changed() {
    if (this.notifyPending) return;
    this.notifyPending = true;
    setTimeout(() => {
      this.notifyPending = false;
      for (const fn of this.listeners) fn(this);
    }, 50);
  }

  machine(name) {
    let m = this.machines.get(name);
    if (!m) {
      m = new MachineState(name);
      this.machines.set(name, m);
      this.attach(m);
    }
    return m;
  }

  attach(m) {
    const ch = this.live.channel(m.name);
    ch.on("status", (s) => {
      if (!s || typeof s !== "object") return;
      m.status = { ...(m.status || { machine: m.name }), ...s };
      if (typeof s.last_frame === "number" && s.last_frame_time) learnServerClock(s.last_frame_time, s.last_frame);
      else if (typeof s.last_seen === "number" && s.last_seen_time) learnServerClock(s.last_seen_time, s.last_seen);
      // What the page paints first: the latest value per sensor, the last
      // FaultDetect and anomaly (see docs/dashboard.md).
      if (s.latest && typeof s.latest === "object") {
        for (const [sensor, v] of Object.entries(s.latest)) {
          if (!v || typeof v !== "object") continue;
          const have = m.latest[sensor];
          if (!have || String(v.time) >= String(have.time)) m.latest[sensor] = { data: v.data, time: v.time };
          if (!(sensor in m.sensors)) m.sensors[sensor] = "";
        }
      }
      m.anomaly = newer(m.anomaly, scoreOf(s.last_fault));
      m.lastAnomaly = newer(m.lastAnomaly, scoreOf(s.last_anomaly));
      this.changed();
    });
    ch.on("update", (u) => {
      if (!u || typeof u !== "object" || !u.sensor_name) return;
      m.latest[u.sensor_name] = { data: u.data, time: u.time };
      learnServerClock(u.time);
      if (!(u.sensor_name in m.sensors)) m.sensors[u.sensor_name] = "";
      this.changed();
    });
    ch.on("anomaly", (a) => {
      if (!a || typeof a !== "object") return;
      // The deployed event has no time: stamped on arrival, on the server's clock.
      m.anomaly = { score: Number(a.score), threshold: Number(a.threshold), at: nowSeconds() + this.skew };
      if (m.anomaly.score > m.anomaly.threshold) {
        m.lastAnomaly = m.anomaly;
        this.anomalySeq += 1;
      }
      m.anomalies += 1;
      this.changed();
    });
    ch.on("alarm", (a) => {
      if (!a || typeof a !== "object") return;
      m.alarmEvents.unshift({ ...a, received: nowSeconds() });
      m.alarmEvents.length = Math.min(m.alarmEvents.length, 50);
      this.refreshAlarms();
      this.changed();
    });
    ch.on("connect", () => this.changed());
    ch.on("disconnect", () => this.changed());
  }

  async refresh() {
    try {
      const body = await getJSON("machines", null, { optional: true });
      // A list of status objects, or {"machines": [...], "time": <server epoch>}.
      const list = Array.isArray(body) ? body : body && Array.isArray(body.machines) ? body.machines : null;
      if (body && typeof body.time === "number") this.skew = body.time - nowSeconds();
      if (list) {
        for (const item of list) {
          if (!item || typeof item.machine !== "string") continue;
          const m = this.machine(item.machine);
          m.status = { ...(m.status || {}), ...item };
          const sensors = item.sensors;
          if (Array.isArray(sensors)) {
            for (const s of sensors) if (s && typeof s.name === "string") m.sensors[s.name] = s.type || "";
          } else if (sensors && typeof sensors === "object") {
            Object.assign(m.sensors, sensors);
          }
        }
      } else {
        // A server without /machines: the legacy lists (stored, connected).
        const [stored, connected] = await Promise.all([
          getJSON("stat/machineList"), getJSON("sio/machineList"),
        ]);
        const online = new Set(((connected && connected.machine_list) || []).map((n) => String(n).replace(/^\//, "")));
        for (const name of [...((stored && stored.machine_list) || []), ...online]) {
          const m = this.machine(name);
          m.status = { ...(m.status || { machine: name }), connected: online.has(name) };
        }
      }
      this.loaded = true;
      this.error = "";
    } catch (e) {
      this.error = e.message || String(e);
    }
    this.changed();
  }

  async refreshAlarms() {
    if (!this.alarmsSupported) return;
    try {
      const body = await getJSON("alarms", null, { optional: true });
      if (body === undefined) {
        this.alarmsSupported = false;
        this.alarms = undefined;
      } else {
        this.alarms = Array.isArray(body) ? body : (body && (body.alarms || body.active)) || [];
      }
      this.changed();
    } catch (e) {
      // Kept as it was; the REST state indicator shows the failure.
    }
  }

  // Seconds since a server epoch time, on the server's clock.
  since(epoch) {
    return nowSeconds() + this.skew - epoch;
  }

  alarmsOf(name) {
    if (!Array.isArray(this.alarms)) return [];
    return this.alarms.filter((a) => a && a.machine === name);
  }
}
