"""ClockJumpService's thread-free part on a task.Clock (wall) and a fake elapsed clock."""

import threading

import pytest
from twisted.internet import task

from tsrmon.clockjump import ClockJumpService, JumpDetector, shift_delayed_calls

pytestmark = pytest.mark.timeout(30)


class Clocks:
    """A task.Clock as the wall clock plus an elapsed clock that never jumps."""

    def __init__(self, start=1_800_000_000.0):
        self.wall = task.Clock()
        self.wall.advance(start)
        self.mono = 100.0

    def elapsed(self):
        return self.mono

    def tick(self, dt):
        self.mono += dt
        self.wall.advance(dt)

    def step(self, jump):
        """The wall clock is set (settimeofday): nothing fires, elapsed time stays."""
        self.wall.rightNow += jump


def test_without_correction_a_step_back_stalls_a_pending_call():
    # The problem itself: a call due in 10 s is an hour late after a step back.
    c = Clocks()
    fired = []
    c.wall.callLater(10, fired.append, 1)
    c.step(-3600)
    c.tick(3599)
    assert fired == []
    c.tick(11)
    assert fired == [1]


def test_step_back_keeps_the_remaining_real_delay():
    c = Clocks()
    fired = []
    c.wall.callLater(10, fired.append, "flush")
    det = JumpDetector(c.wall, c.elapsed, threshold=2.0)
    det.reset()
    c.tick(3)
    assert det.check() == 0.0
    c.step(-3600)
    c.tick(1)
    assert det.check() == pytest.approx(-3600)
    c.tick(5.9)  # 9.9 s of real time since scheduling
    assert fired == []
    c.tick(0.2)
    assert fired == ["flush"]
    assert det.jumps == 1 and det.calls_moved == 1


def test_step_forward_does_not_fire_everything_at_once():
    c = Clocks()
    fired = []
    c.wall.callLater(10, fired.append, "ping")
    c.wall.callLater(30, fired.append, "timeout")
    det = JumpDetector(c.wall, c.elapsed)
    det.reset()
    c.tick(2)
    det.check()
    c.step(+3600)
    assert det.check() == pytest.approx(3600)
    c.tick(7.9)
    assert fired == []
    c.tick(0.2)
    assert fired == ["ping"]
    c.tick(20)
    assert fired == ["ping", "timeout"]


def test_a_call_scheduled_after_a_forward_step_is_not_pushed_later():
    c = Clocks()
    fired = []
    det = JumpDetector(c.wall, c.elapsed)
    c.wall.callLater(10, fired.append, "old")
    det.reset()
    c.step(+3600)
    c.wall.callLater(5, fired.append, "new")  # already on the new timeline
    det.check()
    assert det.calls_moved == 1 and det.calls_held == 1
    c.tick(5.1)
    assert fired == ["new"]
    c.tick(5)
    assert fired == ["new", "old"]


def test_a_call_reset_after_a_forward_step_is_not_pushed_later():
    c = Clocks()
    fired = []
    det = JumpDetector(c.wall, c.elapsed)
    call = c.wall.callLater(10, fired.append, "idle")
    det.reset()
    c.step(+3600)
    call.reset(10)  # e.g. activity re-armed a timeout on the new timeline
    det.check()
    c.tick(10.1)
    assert fired == ["idle"]


def test_after_a_step_back_a_call_of_unknown_timeline_may_fire_early_but_never_stalls():
    c = Clocks()
    fired = []
    det = JumpDetector(c.wall, c.elapsed)
    det.reset()
    c.step(-3600)
    c.wall.callLater(5, fired.append, "new")
    det.check()
    c.tick(5.1)
    assert fired == ["new"]


def test_small_differences_are_not_jumps():
    c = Clocks()
    fired = []
    c.wall.callLater(10, fired.append, 1)
    det = JumpDetector(c.wall, c.elapsed, threshold=2.0)
    det.reset()
    c.step(1.5)
    assert det.check() == 0.0
    c.step(1.5)  # absorbed into the reference each time: no accumulation
    assert det.check() == 0.0
    assert det.jumps == 0 and det.calls_moved == 0
    c.tick(7)
    assert fired == [1]  # 10 - 3 s: the small steps were not corrected


def test_shift_skips_called_and_cancelled_calls():
    clock = task.Clock()
    a = clock.callLater(1, lambda: None)
    b = clock.callLater(2, lambda: None)
    c = clock.callLater(3, lambda: None)
    calls = [a, b, c]
    b.cancel()
    clock.advance(1)  # a is called
    moved, held = shift_delayed_calls(calls, 10.0)
    assert (moved, held) == (1, 0)
    assert c.getTime() == 13.0


def test_looping_call_and_sentinel_recover_after_a_step_back():
    """The service on a Clock: a 1 s LoopingCall keeps running once the
    (thread's) poke runs the check; the sentinel keeps running as well."""
    c = Clocks()
    svc = ClockJumpService(c.wall, threshold=2.0, period=1.0, elapsed=c.elapsed, watch_thread=False)
    svc.startService()
    runs = []
    loop = task.LoopingCall(lambda: runs.append(c.wall.seconds()))
    loop.clock = c.wall
    loop.start(1.0, now=False)
    for _ in range(3):
        c.tick(1)
    assert len(runs) == 3
    c.step(-3600)
    c.tick(0.5)
    c.tick(1.0)
    assert len(runs) == 3  # stalled: every call, the sentinel too, is an hour away
    svc._poked()  # what the watch thread's callFromThread runs
    for _ in range(3):
        c.tick(1)
    assert len(runs) >= 6
    assert svc.counters()["jumps"] == 1
    loop.stop()
    svc.stopService()
    assert c.wall.getDelayedCalls() == []


def test_sentinel_catches_a_forward_step_before_later_calls_fire():
    c = Clocks()
    fired = []
    c.wall.callLater(20, fired.append, "timeout")
    svc = ClockJumpService(c.wall, period=1.0, elapsed=c.elapsed, watch_thread=False)
    svc.startService()  # takes the pending calls as known
    c.tick(0.5)
    c.step(+3600)
    c.tick(0.6)  # the sentinel is the first call due: it shifts the rest
    assert fired == [] and svc.counters()["jumps"] == 1
    c.tick(18.8)  # 19.9 s of real time
    assert fired == []
    c.tick(0.2)
    assert fired == ["timeout"]
    svc.stopService()


class PokeRecorder(task.Clock):
    def __init__(self):
        super().__init__()
        self.poked = threading.Event()

    def callFromThread(self, f, *args, **kw):
        self.poked.set()


def test_watch_thread_pokes_the_reactor_when_the_sentinel_is_stalled():
    import time
    clock = PokeRecorder()  # never advanced: the sentinel never runs
    svc = ClockJumpService(clock, period=0.05, elapsed=time.monotonic, watch_thread=True)
    svc.startService()
    try:
        assert clock.poked.wait(5)
    finally:
        svc.stopService()
    assert svc._thread is None and svc.pokes >= 1


def test_make_service_starts_the_guard_before_every_room(tmp_path):
    from tsrmon.config import build_config
    from tsrmon.service import makeService

    config = build_config({"DATABASE": {"PATH": "db"}, "DATA": {"PATH": "data"}, "LOGGER": {"PATH": "log"}},
                          base_dir=str(tmp_path))
    top = makeService(config, reactor=task.Clock(), lock=False)
    names = [s.name for s in top]
    assert names.index("clockjump") < names.index("logfile") < names.index("store"), names


def test_stats_hands_over_the_last_second_after_a_step_back_without_new_data(tmp_path):
    from tests.stats.helpers import Rig, config

    rig = Rig(config(tmp_path, "UTC"), 1_800_000_000.5)
    mono = [0.0]
    det = JumpDetector(rig.clock, lambda: mono[0])
    det.reset()
    rig.feed()  # samples in second 1_800_000_000; the DAQ then goes quiet
    rig.clock.rightNow -= 3600  # the wall clock is stepped back
    det.check()  # ClockJumpService keeps the 1 s tick on schedule
    for _ in range(3):
        mono[0] += 1
        rig.clock.advance(1)
    assert [s[3] for s in rig.live.seconds] == [1_800_000_000, 1_800_000_000]  # vib and temp


@pytest.mark.parametrize("step", [-3600, 3600])
def test_a_real_reactor_heap_keeps_every_call_on_schedule_after_a_step(step):
    """Thousands of calls (some cancelled) in a real, not installed reactor
    driven by a fake wall clock: after the shift the heap is valid, the
    reactor would not sleep for the hour, and each live call fires once its
    own real delay has passed."""
    import random

    from twisted.internet.selectreactor import SelectReactor

    r = SelectReactor()
    try:
        now = [1_800_000_000.0]
        r.seconds = lambda: now[0]  # DelayedCalls take the clock from here
        rng = random.Random(7)
        fired = []
        delays = [rng.uniform(0.0, 100.0) for _ in range(3000)]
        calls = [r.callLater(d, fired.append, i) for i, d in enumerate(delays)]
        for c in calls[::3]:
            c.cancel()
        r.runUntilCurrent()  # new calls enter the heap
        mono = [0.0]
        det = JumpDetector(r, lambda: mono[0])
        det.reset()
        now[0] += step
        assert det.check() == pytest.approx(step)
        assert det.calls_moved == 2000
        assert r.timeout() <= 100.0
        for second in range(1, 102):
            now[0] += 1
            mono[0] += 1
            r.runUntilCurrent()
            due = {i for i, d in enumerate(delays) if i % 3 and d <= second}
            assert set(fired) == due, second
        assert len(fired) == 2000
    finally:
        r.waker.connectionLost(None)
