"""The samples simulated DAQs send (numpy, no Twisted).

:class:`SignalModel` makes one machine's frames: vibration is a few shaft
harmonics plus noise with occasional decaying bursts; temperature drifts
slowly around 40 degC.  With a full rate (issue 17) its vibration sensors
send a :class:`FaultModel` signal from ``tsrmon.analytics.signals`` instead
(1× running speed and noise, plus faults: unbalance 1×, misalignment
2×/3×, an outer-race defect striking at BPFO, inner race, impulses), so
spectra, velocity RMS, orders and bearing tones have something to show.
:func:`history_day` makes the demo's backfilled days.
"""

import math

import numpy as np

from tsrmon.analytics import signals as _signals


class FaultModel:
    """A full-rate vibration signal (g) with faults: the sum of
    :class:`tsrmon.analytics.signals.FaultSignal` s of each kind (the first
    carries the healthy 1× and the noise), the 1× slowly breathing over ten
    minutes so velocity RMS moves across the ISO zones' chart."""

    # Fault levels (g): unbalance puts velocity RMS near the ISO 10816-3
    # B/C boundary of a medium machine; an outer-race defect rings a 2 kHz
    # resonance at BPFO.
    LEVELS = {"unbalance": 0.06, "misalignment": 0.03, "outer_race": 0.4, "inner_race": 0.4,
              "impulses": 0.5, "healthy": 0.0}

    def __init__(self, rate, rpm=1480.0, faults=("unbalance",), seed=0):
        self.rate = float(rate)
        self.rpm = float(rpm)
        kinds = list(faults) or ["healthy"]
        self.parts = []
        for i, kind in enumerate(kinds):
            first = i == 0
            self.parts.append(_signals.FaultSignal(
                rate, kind, rpm=rpm, level=self.LEVELS[kind], base=0.02 if first else 0.0,
                sigma=0.01 if first else 0.0, resonance=2000.0, rep_rate=50.0, seed=seed + i))
        self.n = 0

    def read(self, n):
        x = np.zeros(n)
        t = self.n / self.rate
        breathe = 1.0 + 0.25 * math.sin(2 * math.pi * t / 600.0)
        for part in self.parts:
            chunk = part.read(n)
            x += chunk * breathe if part.kind == "unbalance" else chunk
        self.n += n
        return x


class SignalModel:
    """Sample generator for one machine."""

    def __init__(self, sensors, rate, chunk, seed, full_rate=None, rpm=1480.0, faults=(),
                 meta_fields=False):
        self.rng = np.random.default_rng(seed)
        self.sensors = sensors  # [(name, type)]
        self.rate = rate
        self.chunk = chunk
        self.fs = rate * chunk  # samples per second per sensor
        self.shaft = 20.0 + 10.0 * self.rng.random()  # Hz
        self.n = 0
        self.burst = 0.0
        # Issue 17: vibration sensors at full rate (samples/s), each its own signal.
        self.full_rate = full_rate
        self.rpm = rpm
        self.meta_fields = meta_fields  # JSON: per-sensor rate/unit/rpm
        self.full = {}
        if full_rate:
            self.full_chunk = max(int(round(full_rate / rate)), 1)
            for i, (name, stype) in enumerate(sensors):
                if stype != "TEMP":
                    self.full[name] = FaultModel(full_rate, rpm, faults, seed=seed * 100 + i)

    def frame(self):
        """``{sensor: {"type": ..., "data": [...]}}`` for the next chunk."""
        rng = self.rng
        t = (self.n + np.arange(self.chunk)) / self.fs
        self.n += self.chunk
        if self.burst < 0.05 and rng.random() < 0.02:
            self.burst = 1.5 + rng.random()
        envelope = self.burst * np.exp(-np.arange(self.chunk) / max(self.chunk / 3.0, 1.0))
        self.burst *= math.exp(-1.0 / max(self.rate, 1e-3))
        out = {}
        for i, (name, stype) in enumerate(self.sensors):
            model = self.full.get(name)
            if model is not None:
                entry = {"type": stype, "data": model.read(self.full_chunk).tolist()}
                if self.meta_fields:
                    entry.update(rate=float(self.full_rate), unit="g", rpm=float(self.rpm))
                out[name] = entry
                continue
            if stype == "TEMP":
                base = 40.0 + 1.5 * math.sin(2 * math.pi * t[0] / 600.0 + i)
                values = base + rng.normal(0.0, 0.1, self.chunk)
            else:
                w = 2 * math.pi * self.shaft * t
                values = (0.3 * np.sin(w + i) + 0.15 * np.sin(2 * w + 0.5 * i) + 0.08 * np.sin(3 * w)
                          + rng.normal(0.0, 0.05, self.chunk)
                          + envelope * rng.normal(0.0, 1.0, self.chunk))
            out[name] = {"type": stype, "data": values.tolist()}
        return out


def sensors_for(machine_index, count):
    """``count`` sensors: VIB ones, and a TEMP one when there are several."""
    names = []
    for j in range(count):
        if count > 1 and j == count - 1:
            names.append((f"m{machine_index}_temp", "TEMP"))
        else:
            names.append((f"m{machine_index}_vib{j + 1}", "VIB"))
    return names


def history_day(sensors, minute_starts, rng, per_minute):
    """One chunk of ``per_minute`` samples per sensor for each minute start:
    ``{sensor: array (len(minute_starts), per_minute)}``.  Vibration follows a day shift
    (louder 06:00–22:00 local-ish, by UTC hour + 9) with noise and a few
    bursts; temperature a daily wave around 40 degC."""
    hours = ((np.asarray(minute_starts) / 3600.0) + 9.0) % 24.0  # the demo's machines are in Korea
    n = len(minute_starts)
    shift = 0.6 + 0.4 * (np.clip(np.sin(np.pi * (hours - 5.0) / 17.0), 0.0, None))
    out = {}
    for i, (name, stype) in enumerate(sensors):
        if stype == "TEMP":
            base = 40.0 + 3.0 * np.sin(2 * np.pi * (hours - 9.0) / 24.0) + 0.3 * i
            out[name] = base[:, None] + rng.normal(0.0, 0.2, (n, per_minute))
        else:
            amp = (0.35 + 0.05 * i) * shift * (1.0 + 0.1 * rng.standard_normal(n))
            bursts = rng.random(n) < 0.003
            amp = np.where(bursts, amp * (3.0 + rng.random(n)), amp)
            phase = rng.uniform(0, 2 * np.pi, (n, per_minute))
            out[name] = amp[:, None] * np.sin(phase) + rng.normal(0.0, 0.03, (n, per_minute))
    return out
