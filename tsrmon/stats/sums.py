"""Mergeable partial sums, the one representation of every aggregate.

A bucket of any length (a second, a minute, an hour, a year) is the six
numbers count, sum, sum of |x|, min, max and sum of squares.  Two buckets
merge exactly, so hour/day/month/year rows are upserts of the same sums and
restarts, late data and calendar rollovers share one code path.  ``ABS`` and
``REAL`` only choose which mean the deployed endpoints show.
"""

import math

import numpy as np


class PartialSums:
    __slots__ = ("count", "total", "total_abs", "minimum", "maximum", "total_sq")

    def __init__(self, count=0, total=0.0, total_abs=0.0,
                 minimum=math.inf, maximum=-math.inf, total_sq=0.0):
        self.count = count
        self.total = total
        self.total_abs = total_abs
        self.minimum = minimum
        self.maximum = maximum
        self.total_sq = total_sq

    @classmethod
    def of(cls, values):
        """The sums of a sequence of finite floats (list or numpy array)."""
        a = np.asarray(values, dtype=np.float64)
        if a.size == 0:
            return cls()
        return cls(
            int(a.size),
            float(a.sum()),
            float(np.abs(a).sum()),
            float(a.min()),
            float(a.max()),
            float(np.dot(a, a)),
        )

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
        return self

    def copy(self):
        return PartialSums(self.count, self.total, self.total_abs,
                           self.minimum, self.maximum, self.total_sq)

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
