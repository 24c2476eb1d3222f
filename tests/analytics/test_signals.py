"""Fault signal generators (tsrmon/analytics/signals.py)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsrmon.analytics.moments import Moments
from tsrmon.analytics.signals import KINDS, FaultSignal, impulses, noise, tone
from tsrmon.analytics.spectrum import orders, spectrum_of

RATE = 25600


def test_tone_amplitude_and_frequency():
    x = tone(RATE, RATE, 50.0, 2.0)
    assert np.abs(x).max() == pytest.approx(2.0, rel=1e-6)
    assert x[0] == 0.0 and x[RATE // 200] == pytest.approx(2.0)      # a quarter period


def test_noise_is_reproducible_per_sample_index():
    a = noise(10000, 1.0, seed=3)
    b = np.concatenate([noise(1234, 1.0, 3), noise(8766, 1.0, 3, start=1234)])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, noise(10000, 1.0, seed=4))
    assert noise(0).size == 0


def test_impulses_ring_at_the_resonance_and_repeat():
    x = impulses(RATE, RATE, 10.0, 1.0, 4000.0, 0.0005)
    # The ring's first crest, a quarter period in, has decayed by
    # e^(-1/(4·4000·0.0005)) = 0.88; sampling at 6.4 samples/period lowers it.
    assert 0.7 < np.abs(x).max() <= math.exp(-1 / (4 * 4000 * 0.0005))
    # Each strike starts at k/10 s: 10 strikes in one second.
    starts = np.nonzero(np.abs(x) > 0.5)[0]
    assert len(set((starts // (RATE // 10)).tolist())) == 10
    with pytest.raises(ValueError):
        impulses(RATE, 10, 0.0)


@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(KINDS), cuts=st.lists(st.integers(0, 20000), max_size=6))
def test_reading_in_chunks_equals_reading_at_once(kind, cuts):
    whole = FaultSignal(RATE, kind, seed=9, jitter=0.02).read(20000)
    sig = FaultSignal(RATE, kind, seed=9, jitter=0.02)
    bounds = sorted(set(cuts) | {0, 20000})
    parts = [sig.read(b - a) for a, b in zip(bounds, bounds[1:])]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-12)


def test_fault_kinds_have_their_signature():
    rpm = 1500.0
    lines, _ = spectrum_of(FaultSignal(RATE, "unbalance", rpm=rpm, level=0.5).read(3 * RATE), RATE)
    o = orders(lines, rpm)
    assert o[1][1] > 10 * o[2][1]
    lines, _ = spectrum_of(FaultSignal(RATE, "misalignment", rpm=rpm, level=0.5).read(3 * RATE), RATE)
    o = orders(lines, rpm)
    assert o[2][1] > 5 * o[1][1] and o[2][1] == pytest.approx(0.5 / math.sqrt(2), rel=0.02)
    healthy = Moments.of(FaultSignal(RATE, "healthy").read(3 * RATE))
    faulty = Moments.of(FaultSignal(RATE, "outer_race", level=0.5).read(3 * RATE))
    assert faulty.kurtosis > 3 * healthy.kurtosis and faulty.crest > 2 * healthy.crest
    with pytest.raises(ValueError, match="unknown"):
        FaultSignal(RATE, "gremlins")
