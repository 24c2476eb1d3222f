"""Synthetic vibration (acceleration in g) with the faults analysts look for.

Every generator is a pure function of the absolute sample index, so a
signal read in chunks of any length is the same as read at once
(:class:`FaultSignal` keeps the index; ``tsrmon simulate`` can stream it).

- :func:`tone` — a sine (unbalance is a strong 1×, misalignment a 2×);
- :func:`impulses` — periodic strikes, each ringing a structural resonance
  as a decaying sine (a bearing defect; high crest factor and kurtosis);
- :func:`noise` — white Gaussian noise (kurtosis 3);
- :class:`FaultSignal` — a machine: running speed, optional fault, noise.
"""

import math

import numpy as np

from tsrmon.analytics.envelope import bearing_factors

# SKF 6205 deep-groove ball bearing: 9 balls of 7.94 mm on a 39.04 mm pitch.
BEARING_6205 = {"n_balls": 9, "ball_diameter": 7.94, "pitch_diameter": 39.04,
                "contact_angle": 0.0}


def _times(rate, n, start):
    return (start + np.arange(n, dtype=np.float64)) / rate


def tone(rate, n, freq, amplitude=1.0, phase=0.0, start=0):
    """``amplitude·sin(2π·freq·t + phase)`` at samples start..start+n-1."""
    # Phase from the integer index modulo the period keeps precision for
    # large start indices.
    i = start + np.arange(n, dtype=np.int64)
    return amplitude * np.sin(2 * np.pi * ((freq * i) % rate) / rate + phase)


def noise(n, sigma=1.0, seed=0, start=0, block=4096):
    """White Gaussian noise, reproducible per absolute sample index (drawn in
    fixed blocks of ``block`` samples, each seeded by (seed, block number))."""
    if n <= 0:
        return np.zeros(0)
    b0, b1 = start // block, (start + n - 1) // block
    parts = [np.random.default_rng([seed, b]).standard_normal(block) for b in range(b0, b1 + 1)]
    allv = np.concatenate(parts)
    off = start - b0 * block
    return sigma * allv[off:off + n]


def _jitter(k, seed):
    """Deterministic value in [-0.5, 0.5) per impulse number (Knuth hash)."""
    h = (np.asarray(k, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(seed)) \
        % np.uint64(1 << 32)
    return h.astype(np.float64) / (1 << 32) - 0.5


def impulses(rate, n, rep_rate, amplitude=1.0, resonance=3000.0, decay=0.0005,
             start=0, jitter=0.0, seed=0, modulation=None):
    """Strikes at ``k / rep_rate`` s (± ``jitter`` of a period, deterministic
    per k), each ringing ``amplitude·e^(−τ/decay)·sin(2π·resonance·τ)``.

    ``modulation``: optional ``(freq, depth)`` scaling strike k by
    ``1 + depth·cos(2π·freq·t_k)`` (an inner-race defect passing through the
    load zone once per shaft turn).
    """
    if rep_rate <= 0:
        raise ValueError("impulses: rep_rate must be > 0, got %r" % (rep_rate,))
    out = np.zeros(n)
    if n <= 0:
        return out
    ring = 8 * decay                       # e^-8 = 3e-4: the rest is dropped
    t_a, t_b = start / rate, (start + n) / rate
    k0 = int(math.floor((t_a - ring) * rep_rate)) - 1
    k1 = int(math.ceil(t_b * rep_rate)) + 1
    k = np.arange(max(k0, 0), k1 + 1)
    tk = (k + jitter * _jitter(k, seed)) / rep_rate
    amp = np.full(k.size, float(amplitude))
    if modulation is not None:
        f_m, depth = modulation
        amp *= 1 + depth * np.cos(2 * np.pi * f_m * tk)
    length = int(math.ceil(ring * rate)) + 1
    first = np.ceil(tk * rate - 1e-9).astype(np.int64)         # first sample at/after t_k
    idx = first[:, None] + np.arange(length)[None, :]           # absolute sample numbers
    tau = idx / rate - tk[:, None]
    vals = amp[:, None] * np.exp(-tau / decay) * np.sin(2 * np.pi * resonance * tau)
    rel = idx - start
    ok = (rel >= 0) & (rel < n)
    out += np.bincount(rel[ok], weights=vals[ok], minlength=n)
    return out


KINDS = ("healthy", "unbalance", "misalignment", "outer_race", "inner_race", "impulses")


class FaultSignal:
    """A machine's acceleration (g) at ``rate``: ``read(n)`` the next n samples.

    Always: 1× running speed at ``base`` g and Gaussian noise ``sigma``.
    ``kind`` adds: ``unbalance`` a 1× of ``level`` g; ``misalignment`` a 2×
    of ``level`` and a 3× of level/3; ``outer_race`` strikes at BPFO of
    ``bearing`` (a geometry dict or factors) ringing ``resonance``;
    ``inner_race`` strikes at BPFI, modulated once per turn; ``impulses``
    strikes at ``rep_rate`` Hz.
    """

    def __init__(self, rate, kind="healthy", rpm=1500.0, level=0.5, base=0.05,
                 sigma=0.02, bearing=None, resonance=3500.0, decay=0.0005,
                 rep_rate=50.0, jitter=0.0, seed=0):
        if kind not in KINDS:
            raise ValueError("signal kind %r unknown (one of %s)" % (kind, ", ".join(KINDS)))
        self.rate = float(rate)
        self.kind = kind
        self.rpm = float(rpm)
        self.level, self.base, self.sigma = level, base, sigma
        bearing = bearing or BEARING_6205
        self.factors = (bearing_factors(bearing["n_balls"], bearing["ball_diameter"],
                                        bearing["pitch_diameter"], bearing.get("contact_angle", 0))
                        if "n_balls" in bearing else dict(bearing))
        self.resonance, self.decay = resonance, decay
        self.rep_rate, self.jitter, self.seed = rep_rate, jitter, seed
        self.position = 0

    @property
    def shaft_hz(self):
        return self.rpm / 60.0

    def at(self, start, n):
        """Samples start..start+n-1 (pure: same answer however it is cut)."""
        fr, rate = self.shaft_hz, self.rate
        x = tone(rate, n, fr, self.base, start=start)
        if self.sigma:
            x += noise(n, self.sigma, self.seed, start)
        k = self.kind
        if k == "unbalance":
            x += tone(rate, n, fr, self.level, 0.3, start)
        elif k == "misalignment":
            x += tone(rate, n, 2 * fr, self.level, 0.7, start)
            x += tone(rate, n, 3 * fr, self.level / 3, 1.1, start)
        elif k == "outer_race":
            x += impulses(rate, n, self.factors["bpfo"] * fr, self.level, self.resonance,
                          self.decay, start, self.jitter, self.seed)
        elif k == "inner_race":
            x += impulses(rate, n, self.factors["bpfi"] * fr, self.level, self.resonance,
                          self.decay, start, self.jitter, self.seed, modulation=(fr, 0.8))
        elif k == "impulses":
            x += impulses(rate, n, self.rep_rate, self.level, self.resonance,
                          self.decay, start, self.jitter, self.seed)
        return x

    def read(self, n):
        x = self.at(self.position, n)
        self.position += n
        return x
