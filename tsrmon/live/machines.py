"""The ``/sio/<machine>`` namespaces: the deployed events and two additions.

Deployed (docs/legacy.md §2.2, §2.3, §4): ``update`` per sensor every
LIVE.INTERVAL seconds, ``anomaly`` for every FaultDetect, and ``initialize``
(client asks, server answers with one event per sensor carrying the cached
updates, oldest first).  Added: ``status`` (DAQ connected/disconnected, last
frame time) and ``subscribe``/``unsubscribe`` to per-second ``second`` events
of chosen sensors, sent only to the subscribing client; and (issue 17)
``subscribe_spectrum``/``unsubscribe_spectrum`` to ``spectrum`` events: the
newest closed minute's spectrum of chosen sensors (RMS per line, at most
400 values), sent to the subscribing client right after it subscribes and
then at the first LIVE.INTERVAL tick after each new minute is stored.

``status`` is also what a page paints first, so it carries what a client
would otherwise wait up to LIVE.INTERVAL for, or never see for a machine of
an earlier run: ``latest`` (the last interval value per sensor), ``last_fault``
(the last FaultDetect), ``last_anomaly`` (the last one over threshold) and
``last_seen`` (the last frame, or the newest stored minute or fault).  What
this run has not seen comes from storage (``stored_summary``), read once per
namespace on the first ``status`` request; a ``status`` request is answered after
that read.

A :class:`MachineNamespace` lives as long as the service, independent of the DAQ
connection, so the cache survives reconnects and clients stay connected while
the DAQ is away.
"""

import datetime
from collections import deque

import numpy as np
from twisted.internet import defer

from tsrmon.analytics import spectrum as _spectrum
from tsrmon.hub.registry import LastFault
from tsrmon.live.socketio import Namespace

NAMESPACE_PREFIX = "/sio/"


class MachineNamespace(Namespace):
    """One machine's namespace: windows, cache and per-second subscribers."""

    def __init__(self, machine, service):
        super().__init__(NAMESPACE_PREFIX + machine)
        self.machine = machine
        self.service = service
        self.windows = {}  # sensor -> [stype, PartialSums] of the current interval
        self.cache = {}  # sensor -> deque of update payloads, first-seen order
        self.subscribers = {}  # sensor -> set of NamespaceSocket
        self.stored = None  # stored_summary() once read (None: not yet, or no storage)
        self._stored_waiters = None  # Deferreds waiting for the read in flight
        self.live_anomaly = None  # the LastFault of the last anomaly of this run
        self.spectrum_subscribers = {}  # sensor -> set of NamespaceSocket (issue 17)
        self.spectrum_sent = {}  # sensor -> t0 of the minute last sent to the subscribers
        self._spectrum_reading = set()  # sensors whose stored spectrum is being read

    # -- data from the live bus ---------------------------------------------
    def add_second(self, sensor, stype, t, sums):
        window = self.windows.get(sensor)
        if window is None:
            self.windows[sensor] = [stype, sums.copy()]
        else:
            window[0] = stype
            window[1].merge(sums)
        subscribers = self.subscribers.get(sensor)
        if subscribers and sums.count:
            mode = self.service.mode(stype)
            payload = {
                "sensor_name": sensor,
                "data": _float(sums.value(mode)),
                "time": self.service.time_text(t),
                "count": sums.count,
                "min": _float(sums.minimum),
                "max": _float(sums.maximum),
                "rms": _float(sums.rms),
            }
            self.service.count_sent(self.send_to(subscribers, "second", payload))

    def close_window(self, time_text):
        """The interval ended: one ``update`` per sensor that had samples."""
        windows, self.windows = self.windows, {}
        size = self.service.cache_size
        updates = []
        for sensor, (stype, sums) in windows.items():
            if not sums.count:
                continue
            value = sums.value(self.service.mode(stype))
            payload = {"sensor_name": sensor, "data": float(value), "time": time_text}
            cached = self.cache.get(sensor)
            if cached is None:
                cached = self.cache[sensor] = deque(maxlen=size)
            if size:
                cached.append(payload)
            updates.append(("update", payload))
        # All of the tick's updates to each client in one call (issue 18: the
        # per-client cost stays flat as sensors are added).
        return self.broadcast_all(updates)

    def prepend_history(self, sensor, payloads):
        """Rebuilt updates (oldest first) go before whatever arrived live."""
        size = self.service.cache_size
        live = self.cache.get(sensor)
        first = live[0]["time"] if live else None
        older = [p for p in payloads if first is None or p["time"] < first]
        merged = deque(older + list(live or ()), maxlen=size)
        if merged or live is not None:
            self.cache[sensor] = merged

    def broadcast(self, event, *args):
        if event == "anomaly" and args and isinstance(args[0], dict):
            # Every FaultDetect is broadcast; remember the last one over threshold.
            a = args[0]
            if a.get("score", 0.0) > a.get("threshold", 0.0):
                self.live_anomaly = LastFault(a["score"], a["threshold"], self.service.clock.seconds())
        return super().broadcast(event, *args)

    def status_payload(self):
        machine = self.service.registry.get(self.machine)
        stored = self.stored or {}
        text = self.service.time_text
        if machine is None:
            payload = {"machine": self.machine, "connected": False, "last_frame": None,
                       "last_frame_time": None, "connected_since": None, "disconnected_at": None}
            last_fault = None
        else:
            last = machine.last_frame
            payload = {
                "machine": self.machine,
                "connected": machine.connected,
                "last_frame": last,
                "last_frame_time": text(last) if last is not None else None,
                "connected_since": machine.connected_since,
                "disconnected_at": machine.disconnected_at,
            }
            last_fault = machine.last_fault
        if last_fault is None:
            last_fault = stored.get("last_fault")
        anomaly = self.live_anomaly or stored.get("last_anomaly")
        seen = payload["last_frame"]
        if seen is None:
            seen = stored.get("last_seen")
        payload["last_seen"] = seen
        payload["last_seen_time"] = text(seen) if seen is not None else None
        payload["last_fault"] = _score(last_fault, text)
        payload["last_anomaly"] = _score(anomaly, text)
        latest = dict(stored.get("latest") or {})
        for sensor, cached in self.cache.items():
            if cached:
                latest[sensor] = {"data": cached[-1]["data"], "time": cached[-1]["time"]}
        payload["latest"] = latest
        return payload

    def stored_ready(self):
        """A Deferred that fires once storage was asked (at most once per namespace)."""
        if self.stored is not None:
            return defer.succeed(None)
        read = getattr(self.service, "stored_status", None)
        if read is None:
            return defer.succeed(None)
        d = defer.Deferred()
        if self._stored_waiters is None:
            self._stored_waiters = [d]
            self._read_stored(read)
        else:
            self._stored_waiters.append(d)
        return d

    def _read_stored(self, read):
        def done(result):
            self.stored = result if isinstance(result, dict) else {}
            waiters, self._stored_waiters = self._stored_waiters or [], None
            for w in waiters:
                w.callback(None)

        def failed(failure):
            self.service.log.failure("live: reading the stored status of {machine} failed",
                                     failure, machine=self.machine)
            done({})

        defer.maybeDeferred(read, self.machine).addCallbacks(done, failed)

    # -- socket events -------------------------------------------------------
    def on_connect(self, socket, auth):
        # Through the engine's PeerLog: a reconnect storm writes a few lines
        # per client address a minute, then a count.
        session = socket.connection.session
        self.service.engine.peerlog.info(
            session.peer, "joined", "live client {sid} from {peer} joined {nsp} over {transport}",
            sid=socket.sid, peer=session.peer, nsp=self.name, transport=session.transport_name)

    def on_disconnect(self, socket, reason):
        for sensor in socket.state.pop("subscribed", ()):
            subs = self.subscribers.get(sensor)
            if subs is not None:
                subs.discard(socket)
                if not subs:
                    del self.subscribers[sensor]
        for sensor in socket.state.pop("spectrum", ()):
            self._drop_spectrum(sensor, socket)
        session = socket.connection.session
        self.service.engine.peerlog.info(
            session.peer, "left", "live client {sid} from {peer} left {nsp}: {reason}",
            sid=socket.sid, peer=session.peer, nsp=self.name, reason=reason)

    def on_event(self, socket, event, args, ack):
        handler = self.EVENTS.get(event)
        if handler is None:
            if ack is not None:
                ack({"error": f"unknown event {event!r}"})
            return
        handler(self, socket, args, ack)

    def _initialize(self, socket, args, ack):
        # The argument is ignored, as deployed (the app sends its channel name).
        for cached in self.cache.values():
            if cached:
                self.service.count_sent(socket.emit("initialize", list(cached)))
        if ack is not None:
            ack()

    def _status(self, socket, args, ack):
        def answer(_):
            if socket.sid not in self.sockets:
                return  # left while storage was read
            payload = self.status_payload()
            if ack is not None:
                ack(payload)
            else:
                self.service.count_sent(socket.emit("status", payload))

        self.stored_ready().addCallback(answer)

    def _subscribe(self, socket, args, ack):
        sensors = _sensor_names(args)
        if sensors is None:
            if ack is not None:
                ack({"error": "expected a sensor name, a list of names or {\"sensors\": [...]}"})
            return
        mine = socket.state.setdefault("subscribed", set())
        limit = self.service.max_subscriptions
        for sensor in sensors:
            if sensor in mine or len(mine) >= limit:
                continue
            mine.add(sensor)
            self.subscribers.setdefault(sensor, set()).add(socket)
        if ack is not None:
            ack(sorted(mine))

    def _unsubscribe(self, socket, args, ack):
        mine = socket.state.setdefault("subscribed", set())
        sensors = _sensor_names(args) if args else sorted(mine)
        for sensor in sensors or ():
            if sensor in mine:
                mine.discard(sensor)
                subs = self.subscribers.get(sensor)
                if subs is not None:
                    subs.discard(socket)
                    if not subs:
                        del self.subscribers[sensor]
        if ack is not None:
            ack(sorted(mine))

    # -- issue 17: spectrum events ---------------------------------------------
    def _subscribe_spectrum(self, socket, args, ack):
        sensors = _sensor_names(args)
        if sensors is None:
            if ack is not None:
                ack({"error": "expected a sensor name, a list of names or {\"sensors\": [...]}"})
            return
        mine = socket.state.setdefault("spectrum", set())
        limit = self.service.max_subscriptions
        added = []
        for sensor in sensors:
            if sensor in mine or len(mine) >= limit:
                continue
            mine.add(sensor)
            self.spectrum_subscribers.setdefault(sensor, set()).add(socket)
            added.append(sensor)
        if ack is not None:
            ack(sorted(mine))
        for sensor in added:  # the newest stored minute at once, to this client only
            self._read_spectrum(sensor, only=socket)

    def _unsubscribe_spectrum(self, socket, args, ack):
        mine = socket.state.setdefault("spectrum", set())
        sensors = _sensor_names(args) if args else sorted(mine)
        for sensor in sensors or ():
            if sensor in mine:
                mine.discard(sensor)
                self._drop_spectrum(sensor, socket)
        if ack is not None:
            ack(sorted(mine))

    def _drop_spectrum(self, sensor, socket):
        subs = self.spectrum_subscribers.get(sensor)
        if subs is not None:
            subs.discard(socket)
            if not subs:
                del self.spectrum_subscribers[sensor]
                self.spectrum_sent.pop(sensor, None)

    def push_spectra(self):
        """A LIVE.INTERVAL tick: read and send each subscribed sensor's spectrum
        whose newest minute (``spectra.latest``) has not been sent yet."""
        spectra = self.service.spectra
        latest = getattr(spectra, "latest", None) or {}
        for sensor in list(self.spectrum_subscribers):
            got = latest.get((self.machine, sensor))
            if got is None or self.spectrum_sent.get(sensor) == got[0]:
                continue
            self._read_spectrum(sensor, want=got[0])

    def _read_spectrum(self, sensor, only=None, want=None):
        read = self.service.spectrum_reader
        if read is None or (only is None and sensor in self._spectrum_reading):
            return
        if only is None:
            self._spectrum_reading.add(sensor)

        def got(spec):
            if only is None:
                self._spectrum_reading.discard(sensor)
            if spec is None:
                return
            # The spectra room tells of a minute when its rows are queued; the
            # reader sees them once committed: until then, try again next tick.
            if want is not None and spec["t0"] < want:
                return
            payload = self.spectrum_payload(sensor, spec)
            if only is not None:
                if only.sid in self.sockets and sensor in only.state.get("spectrum", ()):
                    self.service.count_sent(only.emit("spectrum", payload))
                    # A first subscriber now has this minute: ticks send newer ones.
                    self.spectrum_sent.setdefault(sensor, spec["t0"])
                return
            self.spectrum_sent[sensor] = spec["t0"]
            subs = self.spectrum_subscribers.get(sensor)
            if subs:
                self.service.count_sent(self.send_to(subs, "spectrum", payload))

        def failed(failure):
            if only is None:
                self._spectrum_reading.discard(sensor)
            self.service.log.failure("live: reading the spectrum of {machine}/{sensor} failed",
                                     failure, machine=self.machine, sensor=sensor)

        defer.maybeDeferred(read, self.machine, sensor).addCallbacks(got, failed)

    def spectrum_payload(self, sensor, spec):
        """The wire form: at most ``service.spectrum_lines`` values, adjacent
        lines' power summed (each value the RMS of its band)."""
        values = np.asarray(spec["lines"], dtype=np.float64)
        line = _spectrum.Spectrum(spec["f0"], spec["df"], values, spec.get("blocks") or 1)
        _groups, f0, df, rms = _spectrum.waterfall([line], 1, self.service.spectrum_lines)
        spectra = self.service.spectra
        latest = (getattr(spectra, "latest", None) or {}).get((self.machine, sensor))
        feats = latest[1] if latest is not None and latest[0] == spec["t0"] else {}
        catalog = getattr(spectra, "catalog", None)
        meta = catalog.meta(self.machine, sensor) if catalog is not None else None
        return {
            "sensor_name": sensor,
            "t0": spec["t0"],
            "time": self.service.time_text(spec["t0"]),
            "unit": getattr(meta, "unit", None),
            "amplitude": "rms",
            "blocks": spec.get("blocks"),
            "f0": float(f0),
            "df": float(df),
            "lines": [float(v) for v in rms[0]],
            "peaks": feats.get("peaks"),
            "orders": feats.get("orders"),
            "velocity_rms": feats.get("velocity_rms"),
            "iso_zone": (feats.get("iso") or {}).get("zone"),
        }

    EVENTS = {
        "initialize": _initialize,
        "status": _status,
        "subscribe": _subscribe,
        "unsubscribe": _unsubscribe,
        "subscribe_spectrum": _subscribe_spectrum,
        "unsubscribe_spectrum": _unsubscribe_spectrum,
    }


def _sensor_names(args):
    if not args:
        return None
    arg = args[0]
    if isinstance(arg, dict):
        arg = arg.get("sensors")
    if isinstance(arg, str):
        arg = [arg]
    if not isinstance(arg, list) or not all(isinstance(x, str) for x in arg):
        return None
    return arg


def _float(value):
    return None if value is None else float(value)


def _score(fault, text):
    """A :class:`LastFault` → the JSON of ``last_fault`` / ``last_anomaly``."""
    if fault is None:
        return None
    t = fault.t
    return {"score": float(fault.score), "threshold": float(fault.threshold), "t": t,
            "time": text(t) if t is not None else None, "over": fault.score > fault.threshold}


@defer.inlineCallbacks
def stored_summary(reader, machine, now, mode, zone, retention_days=7):
    """What storage knows of ``machine`` for its first ``status``:
    ``{"latest": {sensor: {"data", "time"}}, "last_seen": epoch or None,
    "last_fault": a LastFault or None, "last_anomaly": same or None}``.

    ``reader`` is the SQLite reader (every read runs in its threads); the
    newest day is read first and older data only when that day is empty.
    ``mode(stype)`` is the STAT mode of a sensor type, ``zone`` TIME.ZONE.
    """
    def text(t):
        return datetime.datetime.fromtimestamp(t, zone).strftime("%Y-%m-%d %H:%M:%S.%f")

    rows = yield reader.recent_minutes(machine, now - 86400)
    if not rows and retention_days > 1:
        rows = yield reader.recent_minutes(machine, now - retention_days * 86400)
    latest, last_seen = {}, None
    for sensor, stype, t0, sums in rows:  # oldest first
        if sums.count:
            latest[sensor] = {"data": float(sums.value(mode(stype))), "time": text(t0 + 60)}
            last_seen = t0 + 60 if last_seen is None else max(last_seen, t0 + 60)
    last_fault = last_anomaly = None
    for days in (1, 30, None):
        start = None if days is None else text(now - days * 86400)[:10]
        faults = yield reader.faults(machine, start=start)
        if faults:
            time_text, t, score, threshold = faults[-1]
            last_fault = LastFault(score, threshold, t if t is not None else _epoch(time_text, zone))
            break
    for days in (1, 30, None):
        start = None if days is None else text(now - days * 86400)[:10]
        anomalies = yield reader.anomalies(machine, start=start)
        if anomalies:
            _, time_text, score, threshold = anomalies[-1]
            last_anomaly = LastFault(score, threshold, _epoch(time_text, zone))
            break
    if last_fault is not None and last_fault.t is not None:
        last_seen = last_fault.t if last_seen is None else max(last_seen, last_fault.t)
    return {"latest": latest, "last_seen": last_seen, "last_fault": last_fault,
            "last_anomaly": last_anomaly}


def _epoch(time_text, zone):
    """Stored local time text → epoch seconds (None when unreadable)."""
    try:
        naive = datetime.datetime.fromisoformat(str(time_text).replace("T", " ")[:26])
    except ValueError:
        return None
    return naive.replace(tzinfo=zone).timestamp() if naive.tzinfo is None else naive.timestamp()
