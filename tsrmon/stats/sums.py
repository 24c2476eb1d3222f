"""Mergeable partial sums, the one representation of every aggregate.

A bucket of any length (a second, a minute, an hour, a year) is the six
numbers count, sum, sum of |x|, min, max and sum of squares.  Two buckets
merge exactly, so hour/day/month/year rows are upserts of the same sums and
restarts, late data and calendar rollovers share one code path.  ``ABS`` and
``REAL`` only choose which mean the deployed endpoints show.

A bucket may also carry :class:`~tsrmon.analytics.moments.Moments`
(``moments``): the power sums of (x − c) up to the fourth about the sensor's
fixed reference c, for skewness and kurtosis (issue 17).  They merge with
the bucket; ``as_tuple``, equality and ``repr`` stay the six deployed sums.
"""

import math

import numpy as np

from tsrmon.analytics.moments import Moments, check_finite, power_sums, scratch_of

# The moment columns of a sum row after the six sums: mcount, ref, s1..s4.
NO_MOMENTS = (0, 0.0, 0.0, 0.0, 0.0, 0.0)
_add, _min, _max = np.add.reduce, np.minimum.reduce, np.maximum.reduce


def six_sums(a, scratch=None):
    """``(count, sum, sum |x|, min, max, sum x²)`` of a non-empty 1-D float64
    array; ``scratch`` (a float64 array as long) takes |x|.  The one
    definition of the six sums: :meth:`PartialSums.of` and
    :class:`SumsReducer` give bit-identical results for the same array."""
    absolute = np.abs(a) if scratch is None else np.abs(a, out=scratch)
    return (int(a.size), float(_add(a)), float(_add(absolute)),
            float(_min(a)), float(_max(a)), float(np.dot(a, a)))


class PartialSums:
    __slots__ = ("count", "total", "total_abs", "minimum", "maximum", "total_sq", "moments")

    def __init__(self, count=0, total=0.0, total_abs=0.0,
                 minimum=math.inf, maximum=-math.inf, total_sq=0.0, moments=None):
        self.moments = moments
        self.count = count
        self.total = total
        self.total_abs = total_abs
        self.minimum = minimum
        self.maximum = maximum
        self.total_sq = total_sq

    @classmethod
    def of(cls, values):
        """The sums of a sequence of finite floats (list or numpy array)."""
        a = np.asarray(values, dtype=np.float64).ravel()
        if a.size == 0:
            return cls()
        return cls(*six_sums(a))

    def merge(self, other):
        """Add ``other`` into this bucket (in place) and return self."""
        if other.count:
            self.count += other.count
            self.total += other.total
            self.total_abs += other.total_abs
            self.total_sq += other.total_sq
            if other.minimum < self.minimum:
                self.minimum = other.minimum
            if other.maximum > self.maximum:
                self.maximum = other.maximum
            om = other.moments
            if om is not None and om.count:
                if self.moments is None:
                    self.moments = om.copy()
                else:
                    self.moments.merge(om)
        return self

    def copy(self):
        m = self.moments
        return PartialSums(self.count, self.total, self.total_abs,
                           self.minimum, self.maximum, self.total_sq,
                           None if m is None else m.copy())

    def moment_tuple(self):
        """``(mcount, ref, s1, s2, s3, s4)``: the moment columns of a sum row."""
        m = self.moments
        if m is None or not m.count:
            return NO_MOMENTS
        return (m.count, m.ref, m.s1, m.s2, m.s3, m.s4)

    def __bool__(self):
        return self.count > 0

    def __eq__(self, other):
        return isinstance(other, PartialSums) and self.as_tuple() == other.as_tuple()

    def __repr__(self):
        return ("PartialSums(count=%d, total=%r, total_abs=%r, minimum=%r, "
                "maximum=%r, total_sq=%r)" % self.as_tuple())

    def as_tuple(self):
        return (self.count, self.total, self.total_abs,
                self.minimum, self.maximum, self.total_sq)

    # Derived figures; each is None for an empty bucket (never NaN).
    @property
    def mean(self):
        return self.total / self.count if self.count else None

    @property
    def mean_abs(self):
        return self.total_abs / self.count if self.count else None

    @property
    def rms(self):
        return math.sqrt(self.total_sq / self.count) if self.count else None

    @property
    def std(self):
        """Population standard deviation (clamped at 0 against rounding)."""
        if not self.count:
            return None
        m = self.total / self.count
        return math.sqrt(max(self.total_sq / self.count - m * m, 0.0))

    def value(self, mode):
        """The deployed ``data`` figure: mean of |x| for ABS, mean for REAL."""
        return self.mean_abs if mode == "ABS" else self.mean


class SumsReducer:
    """A chunk's six sums and its moments about ``ref`` in one go (issue 18).

    ``PartialSums.of`` and the moments' :func:`reduce_chunk` each walked the
    chunk and both took min and max; here the six sums, then the power sums
    of (x − c) (:func:`~tsrmon.analytics.moments.power_sums`), share one
    pair of scratch arrays (grown on demand) and one min and max.  The
    results are those of ``PartialSums.of`` and ``reduce_chunk``, bit for bit.
    """

    def __init__(self, size=25600):
        self._scratch = (np.empty(size), np.empty(size))

    def __call__(self, a, ref):
        """:class:`PartialSums` with ``moments`` of the 1-D float64 array ``a``
        (empty sums for an empty array); ValueError, before anything is
        added anywhere, when a sample is not finite."""
        n = a.size
        if n == 0:
            return PartialSums()
        if n > self._scratch[0].size:
            self._scratch = (np.empty(n), np.empty(n))
        x, y = scratch_of(n, self._scratch)
        count, total, total_abs, lo, hi, total_sq = six_sums(a, x)
        s1, s2, s3, s4 = power_sums(a, ref, x, y)
        check_finite(n, lo, hi, s4)
        ref = float(ref)
        return PartialSums(count, total, total_abs, lo, hi, total_sq,
                           Moments(count, ref, float(s1), float(s2), float(s3), float(s4), lo, hi))


# -- sum rows ------------------------------------------------------------------
# A sum row is ``(sensor, level, t0, utc_offset, time, count, sum, sum_abs,
# min, max, sum_sq)`` optionally followed by the moment columns
# ``(mcount, ref, s1, s2, s3, s4)`` (stats/sinks.py).

def row_moments(row):
    """The :class:`Moments` of a sum row, or None (11 columns, or mcount 0)."""
    if len(row) < 17 or not row[11]:
        return None
    return Moments(row[11], row[12], row[13], row[14], row[15], row[16])


def merge_rows(a, b):
    """Two sum rows of one bucket as one delta (moments shifted to a's
    reference when the references differ)."""
    head = (a[0], a[1], a[2], a[3], a[4], a[5] + b[5], a[6] + b[6], a[7] + b[7],
            min(a[8], b[8]), max(a[9], b[9]), a[10] + b[10])
    ma, mb = row_moments(a), row_moments(b)
    if ma is None and mb is None:
        return head
    if ma is None:
        m = mb
    elif mb is None:
        m = ma
    else:
        m = ma.merge(mb)
    return head + (m.count, m.ref, m.s1, m.s2, m.s3, m.s4)
