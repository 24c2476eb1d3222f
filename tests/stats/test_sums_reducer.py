"""The statistics room's one reduction per chunk (``SumsReducer``, issue 18)
gives exactly what the two separate reductions gave: the six sums of
``PartialSums.of`` and the moments of ``reduce_chunk``, bit for bit, with its
scratch arrays grown on demand (a non-finite chunk is refused:
tests/analytics/test_moments.py)."""

import numpy as np

from tsrmon.analytics.moments import reduce_chunk
from tsrmon.stats.sums import PartialSums, SumsReducer


def test_one_pass_equals_the_two_reductions_bit_for_bit():
    rng = np.random.default_rng(7)
    reducer = SumsReducer(size=100)           # grows on demand
    for n in (40_000, 10, 25_600, 1):
        x = 40.0 + rng.standard_normal(n) * 1e-2
        got = reducer(x, 40.0)
        assert got.as_tuple() == PartialSums.of(x).as_tuple()
        assert got.moments.as_columns() == reduce_chunk(x, 40.0)

    assert reducer(np.empty(0), 40.0).count == 0
