"""The ``/sio/<machine>`` namespaces: the deployed events and two additions.

Deployed (docs/legacy.md §2.2, §2.3, §4): ``update`` per sensor every
LIVE.INTERVAL seconds, ``anomaly`` for every FaultDetect, and ``initialize``
(client asks, server answers with one event per sensor carrying the cached
updates, oldest first).  Added: ``status`` (DAQ connected/disconnected, last
frame time) and ``subscribe``/``unsubscribe`` to per-second ``second`` events
of chosen sensors, sent only to the subscribing client.

A :class:`MachineRoom` lives as long as the service, independent of the DAQ
connection, so the cache survives reconnects and clients stay connected while
the DAQ is away.
"""

from collections import deque

from tsrmon.live.socketio import Namespace

NAMESPACE_PREFIX = "/sio/"


class MachineRoom(Namespace):
    """One machine's namespace: windows, cache and per-second subscribers."""

    def __init__(self, machine, service):
        super().__init__(NAMESPACE_PREFIX + machine)
        self.machine = machine
        self.service = service
        self.windows = {}  # sensor -> [stype, PartialSums] of the current interval
        self.cache = {}  # sensor -> deque of update payloads, first-seen order
        self.subscribers = {}  # sensor -> set of NamespaceSocket

    # -- data from the hub -------------------------------------------------
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
        sent = 0
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
            sent += self.broadcast("update", payload)
        return sent

    def prepend_history(self, sensor, payloads):
        """Rebuilt updates (oldest first) go before whatever arrived live."""
        size = self.service.cache_size
        live = self.cache.get(sensor)
        first = live[0]["time"] if live else None
        older = [p for p in payloads if first is None or p["time"] < first]
        merged = deque(older + list(live or ()), maxlen=size)
        if merged or live is not None:
            self.cache[sensor] = merged

    def status_payload(self):
        machine = self.service.hub.get(self.machine)
        if machine is None:
            return {"machine": self.machine, "connected": False, "last_frame": None,
                    "last_frame_time": None, "connected_since": None, "disconnected_at": None}
        last = machine.last_frame
        return {
            "machine": self.machine,
            "connected": machine.connected,
            "last_frame": last,
            "last_frame_time": self.service.time_text(last) if last is not None else None,
            "connected_since": machine.connected_since,
            "disconnected_at": machine.disconnected_at,
        }

    # -- socket events -------------------------------------------------------
    def on_connect(self, socket, auth):
        self.service.log.info("live client {sid} joined {nsp} over {transport}",
                              sid=socket.sid, nsp=self.name,
                              transport=socket.connection.session.transport_name)

    def on_disconnect(self, socket, reason):
        for sensor in socket.state.pop("subscribed", ()):
            subs = self.subscribers.get(sensor)
            if subs is not None:
                subs.discard(socket)
                if not subs:
                    del self.subscribers[sensor]
        self.service.log.info("live client {sid} left {nsp}: {reason}",
                              sid=socket.sid, nsp=self.name, reason=reason)

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
        payload = self.status_payload()
        if ack is not None:
            ack(payload)
        else:
            socket.emit("status", payload)

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

    EVENTS = {
        "initialize": _initialize,
        "status": _status,
        "subscribe": _subscribe,
        "unsubscribe": _unsubscribe,
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
