"""A machine database filled through the real statistics, spectra room and
SQLite store (issue 17): ``Fan`` with ``vib``, a 1 g 50 Hz tone at 25.6 kHz
(acceleration RMS 0.7071 g, velocity RMS 22.07 mm/s, crest √2, kurtosis
1.5), and ``temp``, the legacy 30-point temperature feed."""

import math

from twisted.internet import defer, reactor, task

from tests.stats.helpers import config as stats_config, epoch
from tsrmon.analytics import signals
from tsrmon.hub import LiveBus, MachineHub, MachineRegistry
from tsrmon.spectra.catalog import SensorCatalog
from tsrmon.spectra.service import SpectraService
from tsrmon.stats.service import StatsService
from tsrmon.store.sqlite import SQLiteStore

ZONE = "Asia/Seoul"
RATE = 25600
START_TEXT = "2026-12-07 10:00:00"
VELOCITY = 9806.65 / (2 * math.pi * 50) / math.sqrt(2)   # 22.07 mm/s
SENSORS = [{"match": "Fan/vib", "rpm": 1500, "unit": "g", "bands": {"low": [10, 1000]}}]


def analytics_config(tmp_path, **sections):
    sections.setdefault("SENSORS", SENSORS)
    sections.setdefault("APP", {"MACHINE_ALIASES": {"Fan1": "Fan"}})
    return stats_config(tmp_path, ZONE, **sections)


class Feeder:
    """Store, statistics and spectra room (computing on the reactor) on a
    driven Clock, for ``Fan``; :meth:`stream` feeds live 1-s chunks."""

    def __init__(self, tmp_path, clock=None, **sections):
        self.cfg = analytics_config(tmp_path, **sections)
        self.start = epoch(ZONE, START_TEXT)
        if clock is None:
            clock = task.Clock()
            clock.advance(self.start)
        self.clock = clock
        self.registry = MachineRegistry(self.cfg, clock)
        # Live clients attach to the bus (``bus.attach``) when a test wants them.
        self.bus = LiveBus()
        self.store = SQLiteStore(self.cfg, reactor, self.registry, clock=clock)
        self.store.startService()
        self.registry.remember(["Fan"])
        self.stats = StatsService(self.cfg, clock, self.bus, self.store)
        self.catalog = SensorCatalog(self.cfg)
        self.spectra = SpectraService(self.cfg, clock, self.store, self.catalog, reactor=reactor,
                                      thread=False)
        self.hub = MachineHub(self.cfg, clock, registry=self.registry, stats=self.stats, spectra=self.spectra,
                              live=self.bus)
        self.stats.startService()
        self.spectra.startService()
        self.k = 0

    def stream(self, seconds, freq=50.0, amp=1.0):
        machine = self.hub.get("Fan")
        for _ in range(seconds):
            k = self.k
            x = signals.tone(RATE, RATE, freq, amp, start=k * RATE)
            temp = [40.0 + 0.01 * math.sin(k + i) for i in range(30)]
            self.clock.advance(1)   # a live chunk is stamped at its arrival, after its last sample
            self.hub.data(machine, [("vib", "VIB", x), ("temp", "TEMP", temp)])
            self.k += 1

    def flush(self):
        """Deferred: the queued rows are committed (the reader sees them)."""
        return self.store.flush()

    @defer.inlineCallbacks
    def stop(self):
        yield self.spectra.stopService()
        yield self.stats.stopService()
        yield self.store.stopService()


@defer.inlineCallbacks
def fill(tmp_path, seconds=130, freq=50.0, amp=1.0, **sections):
    """Stream ``seconds`` live 1-s chunks from the local ``START_TEXT`` on;
    every service is stopped (so every row is committed) before it returns
    the :class:`Feeder` (``cfg``, ``clock``, ``hub``, ``catalog``, ``spectra``,
    ``start``)."""
    feeder = Feeder(tmp_path, **sections)
    feeder.stream(seconds, freq, amp)
    yield feeder.stop()
    return feeder
