"""Additive higher moments (tsrmon/analytics/moments.py) against numpy."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsrmon.analytics.moments import Moments, choose_reference, reduce_chunk
from tsrmon.analytics.signals import noise, tone
from tsrmon.stats.sums import SumsReducer

RATE = 25600


def numpy_figures(x):
    """Two-pass central moments: the reference the power sums must match."""
    x = np.asarray(x, dtype=np.float64)
    m = x.mean()
    d = x - m
    m2 = np.mean(d ** 2)
    # A (near-)zero m2 makes NaN/inf here; callers skip those figures.
    with np.errstate(all="ignore"):
        return {
            "mean": m, "variance": m2, "rms": math.sqrt(np.mean(x * x)),
            "skewness": np.mean(d ** 3) / m2 ** 1.5, "kurtosis": np.mean(d ** 4) / m2 ** 2,
            "peak": np.abs(x).max(), "peak_to_peak": x.max() - x.min(),
        }


def test_sine_1g_50hz_figures():
    x = tone(RATE, RATE, 50.0, 1.0)          # exactly 50 periods
    m = Moments.of(x)
    assert m.rms == pytest.approx(1 / math.sqrt(2), rel=1e-9)       # 0.7071 g
    assert m.peak == pytest.approx(1.0, abs=1e-9)
    assert m.crest == pytest.approx(math.sqrt(2), rel=1e-6)
    assert m.kurtosis == pytest.approx(1.5, rel=1e-6)
    assert m.skewness == pytest.approx(0.0, abs=1e-9)
    assert m.peak_to_peak == pytest.approx(2.0, abs=1e-9)


def test_gaussian_noise_kurtosis_3():
    # Sample kurtosis of n normal values has standard deviation sqrt(24/n):
    # 0.0097 for n = 256,000; the tolerance 0.05 is five of them.
    x = noise(10 * RATE, sigma=0.3, seed=7)
    m = Moments.of(x)
    assert m.kurtosis == pytest.approx(3.0, abs=0.05)
    assert m.skewness == pytest.approx(0.0, abs=0.025)     # sd sqrt(6/n) = 0.005
    assert m.std == pytest.approx(0.3, rel=0.01)


def test_temperature_near_40_with_variance_1e_4():
    rng = np.random.default_rng(1)
    x = 40.0 + 0.01 * rng.standard_normal(100_000)
    ref = numpy_figures(x)
    parts = np.array_split(x, 37)
    c = choose_reference(parts[0])
    acc = Moments()
    for p in parts:
        acc.merge(Moments.of(p, c))
    assert acc.kurtosis == pytest.approx(ref["kurtosis"], rel=1e-9)
    assert acc.skewness == pytest.approx(ref["skewness"], rel=1e-6, abs=1e-9)
    assert acc.variance == pytest.approx(ref["variance"], rel=1e-9)
    assert acc.mean == pytest.approx(ref["mean"], rel=1e-15)
    # Raw power sums (c = 0) lose the fourth moment: the reference matters.
    raw = Moments.of(x, 0.0)
    assert abs(raw.kurtosis - ref["kurtosis"]) > 0.01 * ref["kurtosis"]


def test_concatenated_chunks_match_numpy():
    rng = np.random.default_rng(3)
    chunks = [rng.gamma(2.0, 1.5, size=n) - 1.0 for n in (1, 30, 977, 25600, 5)]
    c = choose_reference(chunks[0])
    acc = Moments()
    for ch in chunks:
        acc.merge(Moments.of(ch, c))
    ref = numpy_figures(np.concatenate(chunks))
    for k, v in ref.items():
        assert getattr(acc, k) == pytest.approx(v, rel=1e-9), k
    assert acc.count == sum(len(c) for c in chunks)


def test_merge_across_references_by_binomial_shift():
    rng = np.random.default_rng(5)
    a = 12.0 + rng.standard_normal(5000)
    b = 12.5 + 2 * rng.standard_normal(3000)
    ma, mb = Moments.of(a, 11.9), Moments.of(b, 13.0)
    whole = Moments.of(np.concatenate([a, b]), 12.2)
    got = ma + mb
    assert got.ref == 11.9
    for k in ("mean", "variance", "skewness", "kurtosis", "rms", "peak", "peak_to_peak"):
        assert getattr(got, k) == pytest.approx(getattr(whole, k), rel=1e-10), k
    shifted = mb.shifted(11.9)
    direct = Moments.of(b, 11.9)
    for f in ("s1", "s2", "s3", "s4"):
        assert getattr(shifted, f) == pytest.approx(getattr(direct, f), rel=1e-10), f


def test_empty_and_constant_buckets_are_none_not_nan():
    e = Moments()
    assert not e
    assert all(v is None for k, v in e.figures().items() if k != "count")
    assert e.merge(Moments()).count == 0
    assert Moments.of([]).count == 0
    c = Moments.of([2.5] * 100, 1.0)     # constant, but not at the reference
    assert c.variance == 0.0
    assert c.kurtosis is None and c.skewness is None
    assert c.mean == pytest.approx(2.5)
    assert c.crest == pytest.approx(1.0)
    z = Moments.of([0.0] * 10)
    assert z.crest is None                    # RMS 0: no crest factor


def test_empty_bucket_adopts_reference_of_first_merge():
    m = Moments().merge(Moments.of([1.0, 2.0], 1.5))
    assert m.ref == 1.5 and m.count == 2


def test_peak_uses_the_larger_magnitude():
    m = Moments.of([-3.0, 1.0, 2.0])
    assert m.peak == 3.0 and m.peak_to_peak == 5.0


def test_columns_roundtrip_and_scratch_agree():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(40000)
    got = Moments(*reduce_chunk(x, 0.1))
    assert Moments.from_columns(got.as_columns()) == got
    scratch = (np.empty(x.size), np.empty(x.size))
    assert reduce_chunk(x, 0.1, scratch) == reduce_chunk(x, 0.1)
    assert reduce_chunk(x[:10], 0.1, scratch) == reduce_chunk(x[:10], 0.1)


def test_choose_reference():
    assert choose_reference([]) == 0.0
    assert choose_reference([40.0012345678, 40.0012345678]) == 40.0012
    assert choose_reference([-1.0, 1.0]) == 0.0


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=4, max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=8),
    offset=st.sampled_from([0.0, 40.0, -1e4]),
)
def test_any_split_merges_to_the_whole(data, cuts, offset):
    x = np.asarray(data) + offset
    c = choose_reference(x[:1])
    bounds = sorted({min(k, x.size) for k in cuts} | {0, x.size})
    acc = Moments()
    for a, b in zip(bounds, bounds[1:]):
        acc.merge(Moments.of(x[a:b], c))
    whole = Moments.of(x, c)
    assert acc.count == whole.count == x.size
    assert acc.minimum == x.min() and acc.maximum == x.max()
    scale = float(np.abs(x - c).max()) or 1.0
    for k in range(1, 5):
        # Sums of the same terms in another order: equal to rounding.
        assert getattr(acc, "s%d" % k) == pytest.approx(
            getattr(whole, "s%d" % k), rel=1e-9, abs=1e-9 * x.size * scale ** k)
    ref = numpy_figures(x)
    assert acc.mean == pytest.approx(ref["mean"], rel=1e-9, abs=1e-9 * scale)
    spread = float(np.ptp(x))
    if spread > 1e-6 * max(scale, 1.0) and ref["variance"] > 0:
        assert acc.variance == pytest.approx(ref["variance"], rel=1e-6)
        if ref["variance"] > 1e-6 * scale * scale:
            assert acc.kurtosis == pytest.approx(ref["kurtosis"], rel=1e-5)
            assert acc.skewness == pytest.approx(ref["skewness"], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_chunks_are_refused(bad):
    x = np.array([1.0, 2.0, bad, 3.0])
    with pytest.raises(ValueError, match="non-finite"):
        reduce_chunk(x, 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        SumsReducer()(x, 0.0)  # the statistics room's reduction


def test_peak_figures_from_existing_columns_match_moments():
    from tsrmon.analytics.moments import peak_figures
    from tsrmon.stats.sums import PartialSums
    x = tone(RATE, RATE, 50.0, 1.0) + 0.2
    ps = PartialSums.of(x)
    got = peak_figures(ps.count, ps.total_sq, ps.minimum, ps.maximum)
    m = Moments.of(x)
    for k in ("rms", "peak", "peak_to_peak", "crest"):
        assert got[k] == pytest.approx(getattr(m, k), rel=1e-12), k
    assert peak_figures(0, 0.0, math.inf, -math.inf)["crest"] is None
    assert peak_figures(3, 0.0, 0.0, 0.0)["crest"] is None


@settings(max_examples=40, deadline=None)
@given(
    parts=st.lists(
        st.tuples(st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=40),
                  st.floats(-60, 60, allow_nan=False)),
        min_size=1, max_size=6),
)
def test_buckets_with_different_references_merge_to_the_whole(parts):
    """Each part reduced about its own reference; merged by binomial shift."""
    acc = Moments()
    for values, ref in parts:
        acc.merge(Moments.of(values, ref))
    x = np.concatenate([np.asarray(v) for v, _ in parts])
    whole = Moments.of(x, acc.ref)
    scale = float(np.abs(x - acc.ref).max()) + max(abs(r - acc.ref) for _, r in parts) + 1.0
    assert acc.count == x.size
    assert (acc.minimum, acc.maximum) == (x.min(), x.max())
    for k in range(1, 5):
        assert getattr(acc, "s%d" % k) == pytest.approx(
            getattr(whole, "s%d" % k), rel=1e-9, abs=1e-10 * x.size * scale ** k)
