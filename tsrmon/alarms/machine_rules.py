"""Machine rules of the alarm room: DAQ silence and a frame rate far below its usual rate.

:class:`AlarmService` judges them every ``check_interval`` seconds on a
LoopingCall of the injected clock, from the hub's
:class:`~tsrmon.hub.machines.Machine` counters (``last_frame``, ``frames``,
``connected``).  The usual frame rate is learned per machine
(:class:`FrameRate`) while nothing is wrong.
"""

import collections

from tsrmon.alarms.engine import INACTIVE
from tsrmon.alarms.rule_model import DAQ_SILENT, RATE_DROP

# A frame rate is judged only when a window should hold at least this many
# frames: below it the count is too small to tell a drop from jitter.
MIN_EXPECTED_FRAMES = 10


class FrameRate:
    """Frame counts of one machine over the rate window and its learned usual rate."""

    __slots__ = ("samples", "usual", "learned")

    def __init__(self):
        self.samples = collections.deque()  # (t, machine.frames)
        self.usual = None  # frames per second (EWMA)
        self.learned = 0.0  # seconds of connected time the usual rate was learned over


class MachineRules:
    """Mixin of :class:`~tsrmon.alarms.service.AlarmService`: uses its
    ``hub``, ``clock``, ``_machine_rules``, ``_rates``, ``_tracker`` and ``_judge``."""

    def check_machines(self):
        """Judge DAQ silence and frame rate for every machine of the hub."""
        if not self._ready or not self._machine_rules:
            return
        now = self.clock.seconds()
        for name, machine in list(self.hub.machines.items()):
            if name in self._syncing:
                continue  # a new owner's read of the stored state is on its way (owner_sync.py)
            if machine.fed_elsewhere is not None:
                continue  # another cluster node feeds it: judged there (issue 16)
            for rule in self._machine_rules:
                if not rule.matches_machine(name):
                    continue
                try:
                    if rule.kind == DAQ_SILENT:
                        self._check_silent(rule, machine, now)
                    elif rule.kind == RATE_DROP:
                        self._check_rate(rule, machine, now)
                except Exception:
                    self.log.failure("alarms: {rule} failed on {machine}", rule=rule.name, machine=name)

    def _check_silent(self, rule, machine, now):
        last = machine.last_frame
        if last is None:
            return  # nothing since start: a machine known from storage only
        silent = max(now - last, 0.0)
        tracker = self._tracker(rule.name, machine.name, "")
        self._judge(tracker, rule, now, silent, rule.trips(silent), rule.clears(silent),
                    {"link": "connected" if machine.connected else "disconnected"})

    def _check_rate(self, rule, machine, now):
        rate_state = self._rates.get(machine.name)
        if rate_state is None:
            rate_state = self._rates[machine.name] = FrameRate()
        samples = rate_state.samples
        if not machine.connected:
            samples.clear()  # a reconnect starts a new window
            return
        frames = machine.frames
        if samples and frames < samples[-1][1]:
            samples.clear()
        samples.append((now, frames))
        window = rule.window
        while len(samples) >= 2 and samples[1][0] <= now - window:
            samples.popleft()
        if len(samples) < 2:
            return
        tracker = self._tracker(rule.name, machine.name, "")
        usual = rate_state.usual
        oldest_t, oldest_frames = samples[0]
        span = now - oldest_t
        if (span >= window and usual is not None and rate_state.learned >= rule.extra["warmup"]
                and usual * window >= MIN_EXPECTED_FRAMES):
            rate = (frames - oldest_frames) / span
            if rate > 0:  # no frames at all is silence, the other rule's business
                level = rule.level * usual
                clear = rule.clear * usual
                self._judge(tracker, rule, now, rate, rate < level, rate >= clear,
                            {"level": level, "clear": clear, "usual": usual})
        # Learn the usual rate only while nothing is wrong, so a drop is not
        # learned; intervals without frames are silence, not a rate.
        if tracker.state == INACTIVE:
            prev_t, prev_frames = samples[-2]
            dt = now - prev_t
            if dt > 0 and frames > prev_frames:
                inst = (frames - prev_frames) / dt
                if usual is None:
                    rate_state.usual = inst
                else:
                    rate_state.usual = usual + min(1.0, dt / rule.extra["learn"]) * (inst - usual)
                rate_state.learned += dt
