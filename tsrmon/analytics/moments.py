"""Additive higher moments: power sums of (x - c) up to the fourth.

A bucket holds ``count``, a reference ``ref`` (the sensor's fixed centre c,
chosen once from its first data), the power sums ``s1..s4`` of ``x - c`` and
``minimum`` / ``maximum``.  Buckets with the same reference merge by plain
addition (the store's "upsert adds a delta" contract); buckets with
different references merge after a binomial shift (:meth:`Moments.shifted`).

Why a fixed reference and not Welford/Pébay updates: those carry a running
mean and need a non-additive merge, which an SQL ``UPDATE ... SET s = s + ?``
cannot do.  Power sums about a *fixed* c are additive and stay accurate as
long as the bucket mean is within a few hundred standard deviations of c:
the relative error of the fourth central moment is about
``eps * (|mean - c| / std) ** 4`` (eps = 2.2e-16), so a temperature near 40
with variance 1e-4 is exact to ~1e-12 when c is near 40, where raw power sums
(c = 0) would lose every digit (40**4 / 1e-8 = 2.6e14).

Derived figures follow docs/analytics.md; every one is ``None`` when it is
undefined (empty bucket, zero variance), never NaN.
"""

import math

import numpy as np

# Central second moment below this fraction of the mean square of (x - c) is
# rounding noise: treat the bucket as constant (skewness/kurtosis undefined).
_ZERO_VARIANCE = 64 * np.finfo(np.float64).eps
_add, _min, _max, _dot = np.add.reduce, np.minimum.reduce, np.maximum.reduce, np.dot


def choose_reference(values):
    """The fixed centre c of a sensor, from its first data: their mean.

    Rounded to 6 significant digits so that it reads well where it is stored
    (any finite value works; only its distance from later means matters).
    Empty input gives 0.0.
    """
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return 0.0
    m = float(np.mean(a))
    if m == 0.0 or not math.isfinite(m):
        return 0.0
    return float(f"{m:.6g}")


class Moments:
    """Mergeable bucket: count, ref, Σ(x-c)^1..4, min, max."""

    __slots__ = ("count", "ref", "s1", "s2", "s3", "s4", "minimum", "maximum")

    def __init__(self, count=0, ref=0.0, s1=0.0, s2=0.0, s3=0.0, s4=0.0,
                 minimum=math.inf, maximum=-math.inf):
        self.count = int(count)
        self.ref = float(ref)
        self.s1 = float(s1)
        self.s2 = float(s2)
        self.s3 = float(s3)
        self.s4 = float(s4)
        self.minimum = float(minimum)
        self.maximum = float(maximum)

    # -- construction ----------------------------------------------------------
    @classmethod
    def of(cls, values, ref=None):
        """Moments of a sequence of finite floats about ``ref`` (default: chosen
        from ``values`` by :func:`choose_reference`)."""
        a = np.asarray(values, dtype=np.float64).ravel()
        if ref is None:
            ref = choose_reference(a)
        return cls(*reduce_chunk(a, ref))

    @classmethod
    def from_columns(cls, columns):
        """Inverse of :meth:`as_columns`."""
        return cls(*columns)

    def as_columns(self):
        """``(count, ref, s1, s2, s3, s4, minimum, maximum)``."""
        return (self.count, self.ref, self.s1, self.s2, self.s3, self.s4,
                self.minimum, self.maximum)

    def copy(self):
        return Moments(*self.as_columns())

    # -- merging ---------------------------------------------------------------
    def shifted(self, ref):
        """The same bucket expressed about another reference (binomial shift).

        With d = x - c_old and δ = c_old - c_new, x - c_new = d + δ, so
        Σ(d+δ)^k = Σ_j C(k,j) δ^(k-j) Σd^j  (Σd^0 = n).
        """
        ref = float(ref)
        if ref == self.ref or not self.count:
            return Moments(self.count, ref, self.s1, self.s2, self.s3, self.s4,
                           self.minimum, self.maximum)
        d = self.ref - ref
        n, s1, s2, s3, s4 = self.count, self.s1, self.s2, self.s3, self.s4
        d2 = d * d
        return Moments(
            n, ref,
            s1 + n * d,
            s2 + 2 * d * s1 + n * d2,
            s3 + 3 * d * s2 + 3 * d2 * s1 + n * d2 * d,
            s4 + 4 * d * s3 + 6 * d2 * s2 + 4 * d2 * d * s1 + n * d2 * d2,
            self.minimum, self.maximum)

    def merge(self, other):
        """Add ``other`` into this bucket (in place) and return self.

        An empty self adopts other's reference; otherwise other is shifted to
        self's reference first (a no-op when they are equal, the common case).
        """
        if not other.count:
            return self
        if not self.count:
            self.ref = other.ref
        elif other.ref != self.ref:
            other = other.shifted(self.ref)
        self.count += other.count
        self.s1 += other.s1
        self.s2 += other.s2
        self.s3 += other.s3
        self.s4 += other.s4
        if other.minimum < self.minimum:
            self.minimum = other.minimum
        if other.maximum > self.maximum:
            self.maximum = other.maximum
        return self

    def __add__(self, other):
        return self.copy().merge(other)

    def __bool__(self):
        return self.count > 0

    def __eq__(self, other):
        return isinstance(other, Moments) and self.as_columns() == other.as_columns()

    def __repr__(self):
        return ("Moments(count=%d, ref=%r, s1=%r, s2=%r, s3=%r, s4=%r, "
                "minimum=%r, maximum=%r)" % self.as_columns())

    # -- central moments -------------------------------------------------------
    def _central(self):
        """(m, M2, M3, M4): mean of d and the central moments (population)."""
        n = self.count
        m = self.s1 / n
        e2, e3, e4 = self.s2 / n, self.s3 / n, self.s4 / n
        m2 = m * m
        c2 = e2 - m2
        c3 = e3 - 3 * m * e2 + 2 * m2 * m
        c4 = e4 - 4 * m * e3 + 6 * m2 * e2 - 3 * m2 * m2
        return m, c2, c3, c4, e2

    # Derived figures; None when undefined (never NaN).
    @property
    def mean(self):
        return self.ref + self.s1 / self.count if self.count else None

    @property
    def variance(self):
        """Population variance (clamped at 0 against rounding)."""
        if not self.count:
            return None
        _, c2, _, _, e2 = self._central()
        return c2 if c2 > _ZERO_VARIANCE * e2 else 0.0

    @property
    def std(self):
        v = self.variance
        return None if v is None else math.sqrt(v)

    @property
    def mean_square(self):
        """Σx²/n, from the shifted sums: s2 + 2c·s1 + n·c² (no cancellation
        in this direction: it only adds terms about the same size)."""
        if not self.count:
            return None
        c = self.ref
        return max((self.s2 + 2 * c * self.s1) / self.count + c * c, 0.0)

    @property
    def rms(self):
        ms = self.mean_square
        return None if ms is None else math.sqrt(ms)

    @property
    def skewness(self):
        """Fisher-Pearson skewness M3 / M2^1.5 (0 for a symmetric signal)."""
        if not self.count:
            return None
        _, c2, c3, _, e2 = self._central()
        if c2 <= _ZERO_VARIANCE * e2:
            return None
        return c3 / c2 ** 1.5

    @property
    def kurtosis(self):
        """Pearson kurtosis M4 / M2² (normal = 3, sine = 1.5, not excess)."""
        if not self.count:
            return None
        _, c2, _, c4, e2 = self._central()
        if c2 <= _ZERO_VARIANCE * e2:
            return None
        return max(c4, 0.0) / (c2 * c2)

    @property
    def peak(self):
        """max |x| (about zero, as vibration peaks are read)."""
        if not self.count:
            return None
        return max(abs(self.minimum), abs(self.maximum))

    @property
    def peak_to_peak(self):
        return self.maximum - self.minimum if self.count else None

    @property
    def crest(self):
        """Crest factor peak / RMS (√2 for a sine); None when RMS is 0."""
        r = self.rms
        if not r:
            return None
        return self.peak / r

    def figures(self):
        """All derived figures as a dict (the names the REST ``fields=`` use)."""
        return {
            "count": self.count, "mean": self.mean, "std": self.std, "rms": self.rms,
            "skewness": self.skewness, "kurtosis": self.kurtosis, "peak": self.peak,
            "peak_to_peak": self.peak_to_peak, "crest": self.crest,
            "min": self.minimum if self.count else None,
            "max": self.maximum if self.count else None,
        }


def peak_figures(count, sum_sq, minimum, maximum):
    """``{rms, peak, peak_to_peak, crest}`` from the columns every tsrmon
    row already has (count, sum_sq, min, max): these need no migration and
    exist for rows written before the moment columns.  None when empty."""
    if not count:
        return {"rms": None, "peak": None, "peak_to_peak": None, "crest": None}
    rms = math.sqrt(max(sum_sq, 0.0) / count)
    peak = max(abs(minimum), abs(maximum))
    return {"rms": rms, "peak": peak, "peak_to_peak": maximum - minimum,
            "crest": peak / rms if rms else None}


def power_sums(x, ref, a, b):
    """``(s1, s2, s3, s4)``: the power sums of ``x - ref`` (numpy scalars).

    ``a`` and ``b`` are float64 scratch arrays of ``x``'s length (they are
    overwritten).  Three element-wise passes and four reductions: d and d²
    are formed once, s1 and s2 are numpy's pairwise ``add.reduce`` (error
    ~ eps·log n) and s3 = d²·d, s4 = d²·d² are dot products, which need no
    third and fourth temporary and run at about twice the speed of
    multiply-then-add.  The daemon runs one BLAS thread
    (``OPENBLAS_NUM_THREADS=1``, set by the twistd plugin): a threaded
    ``ddot`` on a loaded 2-core host ran 3-5x slower (bench/analytics.py).
    """
    d = np.subtract(x, ref, out=a)
    d2 = np.multiply(d, d, out=b)
    return _add(d), _add(d2), _dot(d2, d), _dot(d2, d2)


def scratch_of(n, scratch=None):
    """Two float64 arrays of length ``n``: views of ``scratch`` when it is
    long enough, else new ones."""
    if scratch is None or scratch[0].size < n:
        return np.empty(n), np.empty(n)
    return scratch[0][:n], scratch[1][:n]


def check_finite(n, lo, hi, s4):
    """min/max propagate NaN and show ±inf, so the finiteness check is free."""
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(s4)):
        raise ValueError("moments: non-finite samples (or |x - c| beyond 1e77) in a chunk "
                         "of %d" % n)


def reduce_chunk(x, ref, scratch=None):
    """One chunk's columns ``(count, ref, s1, s2, s3, s4, min, max)``.

    ``x`` is a 1-D float64 array of finite samples (the decoder already
    refuses NaN/inf; a chunk that has one anyway raises ValueError before
    anything is added).  Vectorised (:func:`power_sums`); ``scratch`` (two
    float64 arrays at least as long as ``x``) avoids allocating two
    temporaries when the caller reduces many chunks.  The statistics room
    reduces the six deployed sums and these in one go
    (``stats/sums.py`` ``SumsReducer``), with the same operations.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n == 0:
        return (0, float(ref), 0.0, 0.0, 0.0, 0.0, math.inf, -math.inf)
    a, b = scratch_of(n, scratch)
    s1, s2, s3, s4 = power_sums(x, ref, a, b)
    lo, hi = float(_min(x)), float(_max(x))
    check_finite(n, lo, hi, s4)
    return (n, float(ref), float(s1), float(s2), float(s3), float(s4), lo, hi)
