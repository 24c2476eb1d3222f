// node client.cjs <base url> websocket|polling <namespace> [token] [4|2]
// Connects with the unmodified socket.io-client (4.8.4, or 2.5.0 = EIO3 when the
// last argument is 2), emits `initialize` and prints one JSON line per received
// event; exits 0 once initialize, update and anomaly arrived (and, for polling,
// the upgrade to websocket happened); 1 on connect_error or after 10 s.
const [base, mode = "polling", nsp = "/sio/m1", token = "", version = "4"] = process.argv.slice(2);
const transports = mode === "websocket" ? ["websocket"] : ["polling", "websocket"];
let socket;
if (version === "2") {
  const io = require("socket.io-client-v2");
  socket = io(base + nsp, { transports, reconnection: false, timeout: 5000,
                            query: token ? { token } : undefined });
} else {
  const { io } = require("socket.io-client");
  socket = io(base + nsp, { transports, reconnection: false, timeout: 5000,
                            auth: token ? { token } : undefined });
}
const seen = new Set();
const out = (o) => console.log(JSON.stringify(o));
const done = (c) => { socket.close(); setTimeout(() => process.exit(c), 50); };
let upgraded = mode === "websocket";
const finish = () => { if (seen.size === 3 && upgraded) done(0); };
setTimeout(() => { out({ timeout: [...seen] }); done(1); }, 10000);
socket.on("connect", () => {
  out({ connected: socket.id, transport: socket.io.engine.transport.name });
  socket.emit("initialize", "vib1");
});
socket.io.on("open", () => socket.io.engine.on("upgrade", (t) => {
  out({ upgraded: t.name }); upgraded = true; finish(); }));
const failed = (e) => { out({ connect_error: typeof e === "string" ? e : e.message }); done(1); };
socket.on("connect_error", failed);
socket.on("error", failed);  // 2.x reports a refused namespace as "error"
for (const ev of ["initialize", "update", "anomaly"]) socket.on(ev, (d) => {
  out({ event: ev, data: d, transport: socket.io.engine.transport.name });
  seen.add(ev);
  finish();
});
