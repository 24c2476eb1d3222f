"""Statistics and live ticks line up: with LIVE.INTERVAL 1 the window that
closes just after boundary T holds exactly the second [T-1, T), wherever in
that second the DAQ's frame landed (the deployed app shows each update as the
value of the moment before it)."""

import random

import pytest
from twisted.internet import task

from tests.live.conftest import FakeDAQ, make_config
from tsrmon.hub import LiveBus, MachineHub, MachineRegistry
from tsrmon.live.service import LiveService
from tsrmon.stats.memory import MemoryStore
from tsrmon.stats.service import StatsService

T0 = 1_800_000_000.0


def run_until(clock, t, step=0.01):
    """Advance in small steps, as real time passes (every timer on time)."""
    while clock.seconds() + step < t:
        clock.advance(step)
    clock.advance(t - clock.seconds())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_update_is_the_second_before_it(tmp_path, seed):
    rng = random.Random(seed)
    config = make_config(tmp_path, live={"INTERVAL": 1})
    clock = task.Clock()
    clock.advance(T0 + 0.6)  # the daemon starts at any moment of a second
    registry, bus = MachineRegistry(config, clock), LiveBus()
    live = LiveService(config, clock, registry, bus=bus)
    stats = StatsService(config, clock, bus, MemoryStore())
    hub = MachineHub(config, clock, registry=registry, stats=stats, live=bus)
    stats.startService()
    live.startService()
    try:
        machine = hub.claim("m1", FakeDAQ())
        for k in range(1, 21):
            # one frame in second T0+k, anywhere in it (network jitter)
            offset = rng.choice([0.0005, 0.002, 0.01, 0.3, 0.7, 0.999])
            run_until(clock, T0 + k + offset)
            hub.data(machine, [("vib1", "VIB", [float(k)])])
        run_until(clock, clock.seconds() + 2)
        cached = list(live.namespace("m1").cache["vib1"])
        assert len(cached) == 20
        for update in cached:
            # time text is local (UTC here): the second before it is its own
            # whole second minus one
            shown = int(update["time"][17:19])
            before = (shown - 1) % 60
            k = int(round(update["data"]))
            assert int(T0 + k) % 60 == before, (update, k)
    finally:
        live.stopService()
        stats.stopService()
