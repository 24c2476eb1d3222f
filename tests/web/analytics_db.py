"""A machine database filled through the real statistics, spectra room and
SQLite store (issue 17): ``Fan`` with ``vib``, a 1 g 50 Hz tone at 25.6 kHz
(acceleration RMS 0.7071 g, velocity RMS 22.07 mm/s, crest √2, kurtosis
1.5), and ``temp``, the legacy 30-point temperature feed."""

import math

from twisted.internet import defer, reactor, task

from tests.stats.helpers import config as stats_config, epoch
from tsrmon.analytics import signals
from tsrmon.hub.machines import MachineHub
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


class Filled:
    """What :func:`fill` made: the config, the clock (after the data), the
    hub (Fan known), the catalog (Fan/vib seen) and the start epoch."""

    def __init__(self, cfg, clock, hub, catalog, start):
        self.cfg, self.clock, self.hub, self.catalog, self.start = cfg, clock, hub, catalog, start


@defer.inlineCallbacks
def fill(tmp_path, seconds=130, freq=50.0, amp=1.0, **sections):
    """Stream ``seconds`` live 1-s chunks from the local ``START_TEXT`` on;
    every service is stopped (so every row is committed) before it returns."""
    cfg = analytics_config(tmp_path, **sections)
    start = epoch(ZONE, START_TEXT)
    clock = task.Clock()
    clock.advance(start)
    store = SQLiteStore(cfg, reactor, hub=None, clock=clock)
    hub = MachineHub(cfg, clock)
    store.hub = hub
    store.startService()
    hub.remember(["Fan"])
    stats = StatsService(cfg, clock, hub, store)
    catalog = SensorCatalog(cfg)
    spectra = SpectraService(cfg, clock, store, catalog, reactor=reactor, thread=False)
    hub.stats = stats
    hub.spectra = spectra
    stats.startService()
    spectra.startService()
    machine = hub.get("Fan")
    for k in range(seconds):
        x = signals.tone(RATE, RATE, freq, amp, start=k * RATE)
        temp = [40.0 + 0.01 * math.sin(k + i) for i in range(30)]
        clock.advance(1)   # a live chunk is stamped at its arrival, after its last sample
        hub.data(machine, [("vib", "VIB", x), ("temp", "TEMP", temp)])
    yield spectra.stopService()
    yield stats.stopService()
    yield store.stopService()
    return Filled(cfg, clock, hub, catalog, start)
