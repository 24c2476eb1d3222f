"""Shared helpers for the statistics tests: a driven rig and an independent oracle."""

import datetime
import zoneinfo

import numpy as np
from twisted.internet import task

from tsrmon.config import build_config
from tsrmon.hub.machines import MachineHub
from tsrmon.stats.memory import MemoryStore
from tsrmon.stats.service import StatsService
from tsrmon.stats.sums import PartialSums

LEVELS = ("minute", "hour", "day", "month", "year")


def config(tmp_path, zone, flush=10, **sections):
    raw = {"TIME": {"ZONE": zone}, "DATABASE": {"PATH": "db", "FLUSH": flush},
           "DATA": {"PATH": "data"}, "LOGGER": {"PATH": "log"}}
    raw.update(sections)
    return build_config(raw, None, str(tmp_path))


def epoch(zone, text, fold=0):
    """Epoch seconds of a local wall time ``YYYY-MM-DD HH:MM:SS`` in ``zone``."""
    naive = datetime.datetime.fromisoformat(text)
    return naive.replace(tzinfo=zoneinfo.ZoneInfo(zone), fold=fold).timestamp()


class LiveRecorder:
    """A hub LiveSink that keeps every second it is given."""

    def __init__(self):
        self.seconds = []

    def second(self, machine, sensor, stype, t, sums):
        self.seconds.append((machine, sensor, stype, t, sums))

    def machine_status(self, machine):
        pass

    def anomaly(self, machine, score, threshold, t):
        pass


class Rig:
    """Hub + StatsService + a store on a driven Clock, with a record of every
    sample fed (for the oracle)."""

    def __init__(self, cfg, start, store=None, machine="M"):
        self.clock = task.Clock()
        self.clock.advance(start)
        self.store = store if store is not None else MemoryStore()
        self.live = LiveRecorder()
        self.stats = StatsService(cfg, self.clock, [self.live], self.store)
        self.hub = MachineHub(cfg, self.clock, stats=self.stats, live=self.live)
        self.hub.remember([machine])
        self.machine = self.hub.get(machine)
        self.fed = []  # (t, sensor, stype, values)
        self.rng = np.random.default_rng(12345)
        self.stats.startService()

    def feed(self, sensors=(("vib", "VIB"), ("temp", "TEMP")), n=30):
        t = self.clock.seconds()
        frame = []
        for sensor, stype in sensors:
            base = 40.0 if stype == "TEMP" else 0.0
            values = (base + self.rng.normal(size=n)).tolist()
            frame.append((sensor, stype, values))
            self.fed.append((t, sensor, stype, values))
        self.hub.data(self.machine, frame)

    def run(self, seconds, step=1.0, **kw):
        """Feed one frame every ``step`` seconds for ``seconds`` seconds."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.feed(**kw)
            self.clock.advance(step)

    def idle(self, seconds, step=60.0):
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(step, end - self.clock.seconds()))


def oracle(zone, fed, machine="M"):
    """Expected buckets computed straight from each sample's local wall time.

    Returns {(sensor, level): {(time_text, utc_offset or None): PartialSums}};
    the offset is checked for minutes and hours only (a day's offset is the
    one at its midnight, not at the sample).
    """
    tz = zoneinfo.ZoneInfo(zone)
    out = {}
    for t, sensor, _stype, values in fed:
        sec = float(int(t // 1))
        local = datetime.datetime.fromtimestamp(sec, tz)
        off = int(local.utcoffset().total_seconds())
        keys = {
            "minute": (local.strftime("%Y-%m-%d %H:%M:00"), off),
            "hour": (local.strftime("%Y-%m-%d %H:00:00"), off),
            "day": (local.strftime("%Y-%m-%d 00:00:00"), None),
            "month": (local.strftime("%Y-%m-01 00:00:00"), None),
            "year": (local.strftime("%Y-01-01 00:00:00"), None),
        }
        for level, key in keys.items():
            table = out.setdefault((sensor, level), {})
            table.setdefault(key, PartialSums()).merge(PartialSums.of(values))
    return out


def store_view(rows):
    """MemoryStore.table rows -> {(time, utc_offset): PartialSums} and the same
    without offsets."""
    with_off = {}
    for _t0, off, text, sums in rows:
        with_off.setdefault((text, off), PartialSums()).merge(sums)
    return with_off


def assert_matches_oracle(store, zone, fed, machine="M", tol=1e-9):
    expected = oracle(zone, fed, machine)
    assert expected, "nothing was fed"
    for (sensor, level), exp in expected.items():
        rows = store.table(machine, sensor, level)
        got = store_view(rows)
        if exp and next(iter(exp))[1] is None:
            merged = {}
            for (text, _off), s in got.items():
                merged.setdefault((text, None), PartialSums()).merge(s)
            got = merged
        assert sorted(got) == sorted(exp), (sensor, level)
        for key, e in exp.items():
            g = got[key]
            assert g.count == e.count, (sensor, level, key)
            assert abs(g.total - e.total) < tol * max(1.0, abs(e.total)), (sensor, level, key)
            assert abs(g.total_abs - e.total_abs) < tol * max(1.0, abs(e.total_abs))
            assert abs(g.total_sq - e.total_sq) < tol * max(1.0, e.total_sq)
            assert g.minimum == e.minimum and g.maximum == e.maximum
        # t0 of every row is the bucket's local start: it maps back to its label.
        tz = zoneinfo.ZoneInfo(zone)
        for t0, off, text, _s in rows:
            local = datetime.datetime.fromtimestamp(t0, tz)
            assert int(local.utcoffset().total_seconds()) == off
            fmt = {"minute": "%Y-%m-%d %H:%M:00", "hour": "%Y-%m-%d %H:00:00",
                   "day": "%Y-%m-%d 00:00:00", "month": "%Y-%m-01 00:00:00",
                   "year": "%Y-01-01 00:00:00"}[level]
            assert local.strftime(fmt) == text
            # ... and it is the first instant of that label.
            before = datetime.datetime.fromtimestamp(t0 - 1, tz)
            assert before.strftime(fmt) != text or level in ("minute", "hour") and \
                int(before.utcoffset().total_seconds()) != off
    return expected
