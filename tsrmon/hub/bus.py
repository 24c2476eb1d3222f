"""The live bus: every event bound for live clients passes here.

Built first, before the rooms that produce live events (the hub, statistics,
alarm rules) and before the live layer, which attaches itself to it in its
constructor.  It exists because of one cycle no build order can break:
alarm rules emit raise/clear to the live layer, the live layer reads the
spectra room (``spectra.latest``), and the spectra room feeds its features
to alarm rules.  With the bus, each of those is built once with everything
it uses and nothing is assigned afterwards.
"""


class LiveBus:
    """A ``LiveSink`` (``hub/sinks.py``) that hands each event to every
    attached live layer, in attach order."""

    def __init__(self):
        self._sinks = ()

    def attach(self, sink):
        """``sink`` (a ``LiveSink``) gets every event from now on."""
        self._sinks = self._sinks + (sink,)

    @property
    def sinks(self):
        return self._sinks

    def machine_status(self, machine):
        for sink in self._sinks:
            sink.machine_status(machine)

    def anomaly(self, machine, score, threshold, t):
        for sink in self._sinks:
            sink.anomaly(machine, score, threshold, t)

    def second(self, machine, sensor, stype, t, sums):
        for sink in self._sinks:
            sink.second(machine, sensor, stype, t, sums)

    def broadcast(self, machine, event, payload):
        """A live event of ``machine`` (alarm rules' raise/clear) to every client."""
        for sink in self._sinks:
            sink.broadcast(machine, event, payload)
