"""Helpers for the alarm tests: a config in tmp_path, a driven clock, a real hub."""

import pytest
from twisted.internet import task

from tsrmon.alarms.service import AlarmService
from tsrmon.config import build_config
from tsrmon.hub import MachineHub
from tsrmon.stats.sums import PartialSums

T0 = 1_780_000_000.0  # a whole second


def make_config(tmp_path, rules=(), **sections):
    raw = {"DATABASE": {"PATH": str(tmp_path / "db")}, "TIME": {"ZONE": "Asia/Seoul"},
           "ALARM": {"RULES": list(rules)}}
    raw.update(sections)
    return build_config(raw, str(tmp_path / "tsrmon.yml"), str(tmp_path))


class Recorder:
    """Stands in for the live layer's emit and the notifier's notify."""

    def __init__(self):
        self.emitted = []
        self.notified = []

    def emit(self, machine, event, payload):
        self.emitted.append((machine, event, payload))

    def notify(self, machine, title, body, data):
        self.notified.append((machine, title, body, data))

    def events(self, kind=None):
        return [p for _m, e, p in self.emitted if e == "alarm" and (kind is None or p["event"] == kind)]


class Conn:
    def __init__(self, host="10.0.0.5"):
        self.peer_host = host

    def takeover(self, reason):
        pass

    def storage_congested(self, flag):
        pass


class Rig:
    """A clock at T0, a real MachineHub, a recorder and (re)startable AlarmServices."""

    def __init__(self, tmp_path, rules):
        from twisted.internet import reactor
        self.reactor = reactor
        self.tmp_path = tmp_path
        self.config = make_config(tmp_path, rules)
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.hub = MachineHub(self.config, self.clock)
        self.rec = Recorder()
        self.svc = None

    def new_service(self, config=None):
        self.svc = AlarmService(config or self.config, self.clock, self.hub, emit=self.rec.emit,
                                notify=self.rec.notify, reactor=self.reactor)
        return self.svc

    def start(self, config=None):
        svc = self.new_service(config)
        svc.startService()
        return svc.whenReady()

    def stop(self):
        return self.svc.stopService()

    def feed(self, machine, sensor, values, stype="VIB"):
        """One second of ``values`` for a sensor, then the clock moves one second on."""
        t = self.clock.seconds()
        self.svc.second(machine, sensor, stype, t, PartialSums.of(values))
        self.clock.advance(1)


@pytest.fixture
def rig_factory(tmp_path):
    rigs = []

    def make(rules):
        rig = Rig(tmp_path, rules)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        if rig.svc is not None and rig.svc.running:
            rig.svc.stopService()
