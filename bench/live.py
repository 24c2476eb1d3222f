"""Live layer benchmark: latency and fan-out of the daemon's Socket.IO events.

    .venv/bin/python -m bench.live [--quick] [--clients 1,100,1000]

Starts the daemon (``LIVE.INTERVAL: 1``, ``TIME.ZONE: UTC``, raw CSV on),
feeds one DAQ at a steady rate from another process (pre-encoded frames) and
connects lean raw-WebSocket Socket.IO clients from other processes.  Each
client speaks what the deployed app speaks (EIO4 websocket-only, CONNECT
``/sio/<machine>``, pong every ping) and, for the fan-out rows, subscribes to
the per-second ``second`` stream of every sensor.

Latency, on the same machine clock.  Receipt is the moment the bytes
reached the client's socket: the kernel's receive timestamp (SO_TIMESTAMPNS,
CLOCK_REALTIME like the daemon's ``clock.seconds()`` stamp), one per
``recvmsg`` (that of its last bytes, so every frame of a read shares it; a
client that fell behind and reads two writes at once overstates the earlier
one, never understates it).  It is not when the client process got round to
the socket: the benchmark's clients are 500 sockets a process on the
daemon's two cores, standing in for clients on other machines, and their
queueing is not the daemon's latency.  That later time is reported too ("to
the client process's read"; every ready socket is read before any is
parsed).  The daemon's own view of each tick (start to every client's bytes
in the kernel, wall and its CPU time) comes from its ``/metrics`` histograms
``tsrmon_live_tick_seconds`` / ``tsrmon_live_tick_cpu_seconds`` over the
window ("server tick"; wall minus CPU is waiting for a CPU):

- ``update``: receipt − the emit tick.  The daemon closes its windows
  ``LiveService.TICK_OFFSET`` (0.25 s) after each whole multiple of
  LIVE.INTERVAL and stamps the update with ``clock.seconds()`` when the tick
  runs, so the tick is the stamp rounded down to the interval plus that
  offset; the stamp itself gives the time from when the tick callback
  actually started (timer lateness excluded);
- ``second``: receipt − the frame that closed the second.  The daemon closes
  second [s, s + 1) when the first frame after s + 1 arrives (or its 1 s
  stats timer fires); the DAQ sends a frame at s + 1 + FRAME_AFTER_SECOND,
  so latency = receipt − (stamp + 1 + FRAME_AFTER_SECOND).

The DAQ sends a little after each whole second.  (Before the statistics
tick was aligned to the second and the live tick moved 0.25 s past the
boundary, frames exactly at s + 1 raced the live tick and some windows went
out empty; ``ticks with updates`` in the details still shows how many ticks
produced their updates.)

Delivered events/s counts ``update`` + ``second`` events received by all
clients during a window of whole seconds, divided by its length.
"""

import argparse
import array
import math
import multiprocessing
import os
import re
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.load import PacedFeeders, data_frames  # noqa: E402
from bench.proc import cpu_seconds, percentile, rss_mb  # noqa: E402
from tests.daemon.harness import Daemon  # noqa: E402
from tests.live.many_clients import frame as ws_frame  # noqa: E402  (a masked client text frame)
from tsrmon.live.service import LiveService  # noqa: E402

MACHINE = "live"
FEED_HZ = 50  # DataUpdates per second of the one DAQ
# The DAQ's frames go out half a frame period after each whole 1/FEED_HZ, so
# the frame that closes a second never lands on the live tick itself (see
# the module doc: when it does, the tick and the second's roll race).
FEED_PHASE = 0.5
FRAME_AFTER_SECOND = FEED_PHASE / FEED_HZ
UPGRADE = (b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
           b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
TIME_KEY = b'"time":"'
TICK_OFFSET = LiveService.TICK_OFFSET  # windows close this long after each boundary
GRACE = 3.0  # default seconds after the window that late events of it are still counted


PONG = ws_frame("3")
# Receipt stamps: the kernel's time (CLOCK_REALTIME, the clock of the daemon's
# emit stamp) of the last bytes a recvmsg returned, i.e. when they reached
# the client's socket, not when this process got round to reading it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
ANC_SIZE = socket.CMSG_SPACE(16)


def _arrival(anc):
    """Epoch seconds from a recvmsg's SCM_TIMESTAMPNS, or None."""
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec + nsec * 1e-9
    return None


def _frame_at(buf, pos, size):
    """``(payload start, end)`` of the server frame at ``pos``, or None when
    ``buf[:size]`` does not hold all of it yet."""
    if size - pos < 2:
        return None
    n = buf[pos + 1] & 0x7F
    head = 2
    if n == 126:
        if size - pos < 4:
            return None
        n = (buf[pos + 2] << 8) | buf[pos + 3]
        head = 4
    elif n == 127:
        if size - pos < 10:
            return None
        n = int.from_bytes(buf[pos + 2:pos + 10], "big")
        head = 10
    end = pos + head + n
    return None if end > size else (pos + head, end)


def _frames(buf):
    """Complete server frames in ``buf``: ``([(opcode, start, end)], rest offset)``."""
    out = []
    pos = 0
    size = len(buf)
    while (span := _frame_at(buf, pos, size)) is not None:
        out.append((buf[pos] & 0x0F, *span))
        pos = span[1]
    return out, pos


# An update or second event of the namespace and its stamp's minute and second
# (the payload is {"sensor_name", "data", "time", ...}: "time" in the first object).
EVENT_RE = re.compile(rb'\["(update|second)",\{[^}]*?"time":"\d{4}-\d\d-\d\d \d\d:(\d\d):(\d\d\.\d{6})"')


def _scan(buf):
    """End of the complete server frames in ``buf`` and how many of them are pings ("2")."""
    pos = 0
    pings = 0
    size = len(buf)
    while (span := _frame_at(buf, pos, size)) is not None:
        a, pos = span
        if pos - a == 1 and buf[a] == 0x32 and buf[a - 2] & 0x0F == 1:
            pings += 1
    return pos, pings


def _read_until(sock, buf, predicate, deadline):
    """Read frames until one payload satisfies ``predicate``; returns the rest of the buffer."""
    while True:
        frames, _ = _frames(buf)
        for _op, a, b in frames:
            if predicate(bytes(buf[a:b])):
                return buf[b:]
        if time.monotonic() > deadline:
            raise TimeoutError("no handshake frame")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        buf += chunk


def _connect_wave(port, nsp, count, subscribe, deadline):
    """``count`` clients through upgrade, open and CONNECT (+ subscribe)."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]
    for s in socks:
        s.sendall(UPGRADE)
    out = []
    ack = ("40" + nsp + ",{").encode()
    for s in socks:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the upgrade")
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head[:200])
        buf = _read_until(s, buf, lambda p: p.startswith(b"0{"), deadline)
        s.sendall(ws_frame("40" + nsp + ","))
        buf = _read_until(s, buf, lambda p: p.startswith(ack), deadline)
        if subscribe:
            names = ",".join(f'"{x}"' for x in subscribe)
            s.sendall(ws_frame(f'42{nsp},["subscribe",[{names}]]'))
        out.append((s, bytearray(buf)))
    return out


def client_worker(port, nsp, count, subscribe, interval, results, control, frame_after=FRAME_AFTER_SECOND):
    """A process holding ``count`` clients; see the module doc for what it measures.

    Protocol with the parent: puts ``("ready", count)`` once connected, reads
    ``(t0, t1)`` (epoch seconds) from ``control``, counts the events emitted
    in [t0, t1) (by their tick), keeps reading until ``t1 + grace`` and puts
    ``("done", counts, update latencies ms, update latencies from the stamp
    ms, second latencies ms, closed)``.
    """
    try:
        deadline = time.monotonic() + 120
        clients = []
        for i in range(0, count, 50):
            clients.extend(_connect_wave(port, nsp, min(50, count - i), subscribe, deadline))
    except Exception as e:  # reported to the parent, which fails the row
        results.put(("error", repr(e)))
        return
    results.put(("ready", len(clients)))
    sel = selectors.DefaultSelector()
    for s, buf in clients:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, buf)
    sel.register(control, selectors.EVENT_READ, None)
    upd_lat = array.array("d")
    upd_stamp = array.array("d")
    upd_read = array.array("d")
    sec_lat = array.array("d")
    counts = {"update": 0, "second": 0, "other": 0, "pings": 0}
    window = None
    t0 = t1 = cpu0 = grace = 0.0
    closed = 0
    floor = math.floor
    for s, _ in clients:
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    while True:
        # Two passes: every ready socket is read (and its receipt stamped)
        # before any is parsed, so the parse of 500 sockets does not show up
        # in the latency of the last one read.
        reads = []
        for key, _ in sel.select(0.2):
            if key.data is None:
                t0, t1, grace = control.recv()
                window = True
                cpu0 = time.process_time()
                continue
            s = key.fileobj
            try:
                chunk, anc, _flags, _addr = s.recvmsg(262144, ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk, anc = b"", ()
            reads.append((key, chunk, _arrival(anc), time.time()))
        for key, chunk, arrived, now in reads:
            s = key.fileobj
            if not chunk:
                sel.unregister(s)
                s.close()
                closed += 1
                continue
            if arrived is None:
                arrived = now
            buf = key.data
            buf += chunk
            # Lean on purpose (C-speed scans, one latency per distinct stamp of
            # a read): the clients share the 2 cores with the daemon.
            used, pings = _scan(buf)
            if pings:
                try:
                    s.sendall(PONG * pings)
                except OSError:  # reset by the daemon (dropped): counted as closed, the row goes on
                    sel.unregister(s)
                    s.close()
                    closed += 1
                    continue
                counts["pings"] += pings
            arr_h = arrived % 3600.0
            now_h = now % 3600.0
            for (kind, mm, ss), k in Counter(EVENT_RE.findall(buf, 0, used)).items():
                stamp = int(mm) * 60 + float(ss)
                if kind == b"update":
                    # emitted at the tick: boundary + TICK_OFFSET, just before the stamp
                    tick = floor((stamp - TICK_OFFSET) / interval) * interval + TICK_OFFSET
                    lat = (arr_h - tick) % 3600.0
                    if window and t0 <= arrived - lat < t1:
                        counts["update"] += k
                        upd_lat.extend([lat * 1000.0] * k)
                        upd_stamp.extend([((arr_h - stamp) % 3600.0) * 1000.0] * k)
                        upd_read.extend([((now_h - tick) % 3600.0) * 1000.0] * k)
                else:
                    # emitted once the second [stamp, stamp + 1) is over
                    lat = (arr_h - (floor(stamp) + 1.0 + frame_after)) % 3600.0
                    if window and t0 <= arrived - lat < t1:
                        counts["second"] += k
                        sec_lat.extend([lat * 1000.0] * k)
            del buf[:used]
        if window and time.time() > t1 + grace:
            break
    cpu = time.process_time() - cpu0
    for s, _ in clients:
        try:
            s.close()
        except OSError:
            pass
    counts["cpu_s"] = cpu
    results.put(("done", counts, upd_lat.tobytes(), upd_stamp.tobytes(), sec_lat.tobytes(), closed,
                 upd_read.tobytes()))


class ClientProcesses:
    """``clients`` lean Socket.IO clients spread over ``processes`` processes.

    ``frame_after``: how long after a whole second the DAQ's frame that closes
    it is sent (the ``second`` latency is measured from that frame)."""

    def __init__(self, port, nsp, clients, processes, subscribe=(), interval=1.0,
                 frame_after=FRAME_AFTER_SECOND):
        ctx = multiprocessing.get_context("spawn")
        self.results = ctx.Queue()
        self.workers = []
        per = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
        for n in per:
            if not n:
                continue
            parent, child = ctx.Pipe()
            p = ctx.Process(target=client_worker, daemon=True,
                            args=(port, nsp, n, list(subscribe), interval, self.results, child,
                                  frame_after))
            self.workers.append((p, parent))

    def start(self, timeout=180):
        for p, _ in self.workers:
            p.start()
        ready = 0
        for _ in self.workers:
            msg = self.results.get(timeout=timeout)
            if msg[0] != "ready":
                raise RuntimeError(f"client process failed: {msg[1]}")
            ready += msg[1]
        return ready

    def window(self, t0, t1, grace=GRACE):
        """Count what is emitted in [t0, t1) (epoch seconds; sent ahead of t0)
        and arrives by ``t1 + grace``."""
        for _, conn in self.workers:
            conn.send((t0, t1, grace))

    def collect(self, timeout=120):
        counts = {}
        upd, stamp, sec = array.array("d"), array.array("d"), array.array("d")
        read = array.array("d")
        closed = 0
        for _ in self.workers:
            msg = self.results.get(timeout=timeout)
            if msg[0] != "done":
                raise RuntimeError(f"client process failed: {msg[1]}")
            for k, v in msg[1].items():
                counts[k] = counts.get(k, 0) + v
            upd.frombytes(msg[2])
            stamp.frombytes(msg[3])
            sec.frombytes(msg[4])
            closed += msg[5]
            read.frombytes(msg[6])
        for p, _ in self.workers:
            p.join(10)
        self.update_read = sorted(read)  # update latency to the client process's read, ms
        return counts, sorted(upd), sorted(stamp), sorted(sec), closed

    def kill(self):
        for p, _ in self.workers:
            if p.is_alive():
                p.kill()


class ClientGroups:
    """Several :class:`ClientProcesses` (one per namespace) driven as one."""

    def __init__(self, groups):
        self.groups = groups

    def start(self, timeout=180):
        return sum(g.start(timeout) for g in self.groups)

    def window(self, t0, t1, grace=GRACE):
        for g in self.groups:
            g.window(t0, t1, grace)

    def collect(self, timeout=120):
        counts, upd, stamp, sec, closed = {}, [], [], [], 0
        for g in self.groups:
            c, u, st, se, cl = g.collect(timeout)
            for k, v in c.items():
                counts[k] = counts.get(k, 0) + v
            upd += u
            stamp += st
            sec += se
            closed += cl
        self.update_read = sorted(x for g in self.groups for x in g.update_read)
        return counts, sorted(upd), sorted(stamp), sorted(sec), closed

    def kill(self):
        for g in self.groups:
            g.kill()


def _summary(values):
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99), "max": values[-1]}


def _live_counters(d):
    """The daemon's live-layer counters from ``/metrics`` (name -> value)."""
    try:
        text = requests.get(d.url("/metrics"), timeout=5).text
    except requests.RequestException:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("tsrmon_live") and " " in line:
            name, value = line.rsplit(" ", 1)
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def _tick_delta(before, after):
    """The daemon's ticks between two ``/metrics`` reads: ``{"wall"|"cpu": (mean ms, p99 bound ms)}``
    from the histograms ``tsrmon_live_tick_seconds`` / ``tsrmon_live_tick_cpu_seconds``
    (None when the daemon has no such histogram)."""
    out = {}
    for key, name in (("wall", "tsrmon_live_tick_seconds"), ("cpu", "tsrmon_live_tick_cpu_seconds")):
        count = after.get(name + "_count", 0) - before.get(name + "_count", 0)
        if count <= 0:
            out[key] = None
            continue
        mean = (after.get(name + "_sum", 0) - before.get(name + "_sum", 0)) / count
        bound = math.inf
        les = sorted((float(k.split('le="')[1].rstrip('"}')), k) for k in after
                     if k.startswith(name + "_bucket{"))
        for le, k in les:
            if after[k] - before.get(k, 0) >= 0.99 * count:
                bound = le
                break
        out[key] = (mean * 1000.0, bound * 1000.0)
    return out


def scenario(workdir, clients, sensors, seconds, subscribe, processes=None, floats=30, grace=GRACE,
             profile=None, namespaces=1):
    """One daemon, ``namespaces`` DAQs (one machine each) with ``sensors`` × ``floats``
    at FEED_HZ, ``clients`` clients spread evenly over the machines' namespaces."""
    overrides = {"LIVE": {"INTERVAL": 1}, "TIME": {"ZONE": "UTC"}}
    d = Daemon(workdir, overrides=overrides).start()
    feeders = clients_procs = None
    try:
        frames = data_frames(sensors, floats, 20)
        machines = [MACHINE] if namespaces == 1 else [f"{MACHINE}{i + 1}" for i in range(namespaces)]
        feeders = PacedFeeders("127.0.0.1", d.tcp_port, [(machines, frames, FEED_HZ, 0)],
                               phase=FEED_PHASE).start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the namespace exists once the hub knows the machine
            r = requests.get(d.url("/machines"), timeout=5).json()
            items = r.get("machines", r) if isinstance(r, dict) else r
            names = list(items) if isinstance(items, dict) else [m.get("name", m.get("machine")) for m in items]
            if all(m in names for m in machines):
                break
            time.sleep(0.1)
        if processes is None:
            processes = 1 if clients <= 100 else 2
        sub = [f"vib{i + 1}" for i in range(sensors)] if subscribe else ()
        if namespaces == 1:
            clients_procs = ClientProcesses(d.http_port, "/sio/" + MACHINE, clients,
                                            processes, subscribe=sub)
        else:  # one client process per namespace
            clients_procs = ClientGroups([ClientProcesses(d.http_port, "/sio/" + m, clients // namespaces,
                                                          1, subscribe=sub) for m in machines])
        connected = clients_procs.start()
        t0 = math.ceil(time.time()) + 2  # whole seconds: ticks t0 .. t1 - 1 are counted
        t1 = t0 + seconds
        clients_procs.window(t0, t1, grace)
        time.sleep(max(0.0, t0 - time.time()))
        spy = None
        if profile:  # collapsed stacks of the daemon over the window (py-spy in the venv)
            spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record",
                                    "-p", str(d.proc.pid), "-d", str(seconds), "-r", "200",
                                    "-f", "raw", "-o", profile], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        cpu0 = cpu_seconds(d.proc.pid)
        metrics0 = _live_counters(d)
        rss = []
        while time.time() < t1:
            rss.append(rss_mb(d.proc.pid))
            time.sleep(min(1.0, max(0.0, t1 - time.time())))
        cpu = cpu_seconds(d.proc.pid) - cpu0
        rss.append(rss_mb(d.proc.pid))
        counts, upd, stamp, sec, closed = clients_procs.collect()
        if spy is not None:
            spy.wait(60)
        live = _live_counters(d)
    finally:
        if clients_procs is not None:
            clients_procs.kill()
        if feeders is not None:
            try:
                feeders.stop()
            except Exception:
                pass
        d.stop(timeout=60)
    delivered = counts.get("update", 0) + counts.get("second", 0)
    return {
        "clients": clients, "connected": connected, "sensors": sensors, "seconds": seconds,
        "subscribe": bool(subscribe), "counts": counts, "closed": closed,
        "events_per_s": delivered / seconds,
        "expected_per_s": connected * sensors * (2 if subscribe else 1),
        "update_ticks": counts.get("update", 0) / (connected * sensors) if connected else 0,
        "update_ms": _summary(upd), "update_from_stamp_ms": _summary(stamp), "second_ms": _summary(sec),
        "update_read_ms": _summary(clients_procs.update_read),
        "server_cpu_pct": 100 * cpu / seconds,
        "client_cpu_pct": 100 * counts.get("cpu_s", 0.0) / (seconds + grace),
        "rss_mb": max(rss), "live_counters": live, "tick": _tick_delta(metrics0, live),
    }


def _ms(v):
    return "n/a" if v is None else f"{v:.1f}"


def _dropped(r, key):
    value = r["live_counters"].get(f"tsrmon_live_{key}_total")
    return "n/a" if value is None else f"{value:g}"


def _tick_text(tick):
    """The daemon's own view of its ticks (tick start to every client's bytes in the kernel)."""
    wall, cpu = tick.get("wall"), tick.get("cpu")
    if wall is None or cpu is None:
        return "server tick n/a"
    return (f"server tick mean {wall[0]:.1f} ms wall / {cpu[0]:.1f} ms CPU "
            f"(p99 ≤ {wall[1]:g} / ≤ {cpu[1]:g} ms)")


def bench_rows(quick=False, workdir=None, latency_clients=(1, 100), fanout_clients=None,
               fanout_namespaced=None):
    """Rows for ``python -m bench``: live latency (row 3) and fan-out (row 4).

    Every row carries ``p99_ms`` (update p99 from the emit tick).  Quick mode
    keeps the run short: 2-3 s windows, and fan-out at 1,000 clients only
    (1 and 100, and 5,000 clients on 5 namespaces, are in the full run)."""
    if fanout_clients is None:
        fanout_clients = (1000,) if quick else (1, 100, 1000)
    if fanout_namespaced is None:
        fanout_namespaced = not quick
    grace = 2.0 if quick else GRACE
    own = None
    if workdir is None:
        own = tempfile.TemporaryDirectory(prefix="tsrmon-live-")
        workdir = own.name
    rows = []
    lat_seconds = 2 if quick else 30
    fan_seconds = 3 if quick else 20
    try:
        for n in latency_clients:
            name = f"live-latency-{n}"
            try:
                # Deployed shape (2 sensors × 30 floats): 2 updates per client per tick.
                r = scenario(os.path.join(workdir, name), n, 2, lat_seconds, subscribe=True, grace=grace)
                u, st, s = r["update_ms"], r["update_from_stamp_ms"], r["second_ms"]
                limit = 5 if n >= 100 else 20  # issue 18: p99 < 5 ms at 100 clients
                ok = u["p99"] is not None and u["p99"] < limit and r["connected"] == n
                rows.append({
                    "row": name, "figure": f"live latency, {n} client(s): update p99 from the emit tick, ms",
                    "value": round(u["p99"], 1) if u["p99"] is not None else "error",
                    "target": f"< {limit} ms", "pass": ok, "p99_ms": u["p99"],
                    "detail": (f"update p50 {_ms(u['p50'])} / p99 {_ms(u['p99'])} / max {_ms(u['max'])} ms "
                               f"(n={u['n']}, ticks with updates {r['update_ticks']:g} of {lat_seconds}; "
                               f"from the tick's stamp p99 {_ms(st['p99'])}; to the client process's read "
                               f"p99 {_ms(r['update_read_ms']['p99'])}); "
                               f"per-second stream from its closing frame p50 {_ms(s['p50'])} / "
                               f"p99 {_ms(s['p99'])} / max {_ms(s['max'])} ms; {_tick_text(r['tick'])}"),
                    "raw": r})
            except Exception as e:  # a row that breaks is reported, the others still run
                rows.append({"row": name, "figure": "live latency", "value": "error", "target": "< 20 ms",
                             "pass": False, "detail": repr(e)[:200]})
        fanouts = [(n, 1, 32) for n in fanout_clients]
        if fanout_namespaced:
            # 5,000 clients on 5 namespaces (one DAQ each), 8 sensors subscribed: 16 events
            # per client per second; the client processes (one per namespace) must parse
            # 80,000 events/s, which 32 sensors would make 4 times more.
            fanouts.append((5000, 5, 8))
        for n, namespaces, sensors in fanouts:
            name = f"fanout-{n}" if namespaces == 1 else f"fanout-{n}-on-{namespaces}"
            target = 50_000 if n >= 1000 else None
            try:
                # 32 sensors, every client subscribed to all: 64 events per client per second
                # (32 `update` + 32 `second`), the most one namespace gives at LIVE.INTERVAL 1
                # with sensors of a sane count.
                r = scenario(os.path.join(workdir, name), n, sensors, fan_seconds, subscribe=True,
                             grace=grace, namespaces=namespaces)
                u, s = r["update_ms"], r["second_ms"]
                rate = r["events_per_s"]
                # issue 18: 1,000 clients on one namespace get every update with p99 < 30 ms
                p99_ok = n < 1000 or namespaces > 1 or (u["p99"] is not None and u["p99"] < 30)
                ok = (r["connected"] == n and (target is None or rate >= target) and r["closed"] == 0
                      and p99_ok)
                where = "one namespace" if namespaces == 1 else f"{namespaces} namespaces"
                rows.append({
                    "row": name, "figure": f"fan-out, {n} client(s) on {where}: delivered events/s",
                    "value": round(rate), "target": f"≥ {target:,}" if target else "",
                    "pass": ok, "p99_ms": u["p99"],
                    "detail": (f"of {r['expected_per_s']:,} offered ({sensors} sensors; ticks with updates "
                               f"{r['update_ticks']:g} of {fan_seconds}); update p50 {_ms(u['p50'])} / "
                               f"p99 {_ms(u['p99'])} ms (max {_ms(u['max'])}; to the client process's read "
                               f"p99 {_ms(r['update_read_ms']['p99'])}), second p99 {_ms(s['p99'])} ms; "
                               f"{_tick_text(r['tick'])}; server CPU {r['server_cpu_pct']:.0f}%, RSS {r['rss_mb']:.0f} MB; "
                               f"{r['connected']} connected, {r['closed']} closed (dropped as slow "
                               f"{_dropped(r, 'dropped_slow_clients')}, ping timeouts "
                               f"{_dropped(r, 'ping_timeouts')})"),
                    "raw": r})
            except Exception as e:
                rows.append({"row": name, "figure": "fan-out", "value": "error",
                             "target": f"≥ {target:,}" if target else "", "pass": False, "detail": repr(e)[:200]})
    finally:
        if own is not None:
            own.cleanup()
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--latency", default="1,100", help="client counts of the latency rows")
    ap.add_argument("--fanout", default=None, help="client counts of the fan-out rows")
    ap.add_argument("--namespaced", action=argparse.BooleanOptionalAction, default=None,
                    help="the 5,000 clients on 5 namespaces row (default: in the full run)")
    ap.add_argument("--profile", metavar="CLIENTS,SENSORS,SECONDS,OUT",
                    help="only profile the daemon with py-spy (collapsed stacks to OUT) in one scenario")
    args = ap.parse_args(argv)
    counts = lambda text: tuple(int(x) for x in text.split(",") if x)  # noqa: E731
    if args.profile:
        n, sensors, seconds, out = args.profile.split(",", 3)
        with tempfile.TemporaryDirectory(prefix="tsrmon-live-") as tmp:
            r = scenario(os.path.join(tmp, "profile"), int(n), int(sensors), int(seconds), True,
                         profile=os.path.abspath(out))
        print({k: r[k] for k in ("events_per_s", "update_ms", "second_ms", "server_cpu_pct", "client_cpu_pct")})
        return
    for r in bench_rows(args.quick, latency_clients=counts(args.latency),
                        fanout_clients=counts(args.fanout) if args.fanout is not None else None,
                        fanout_namespaced=args.namespaced):
        print(f"{r['row']}: {r['value']} (target {r['target']}, {'pass' if r['pass'] else 'miss'}) {r['detail']}")


if __name__ == "__main__":
    main()
