"""Envelope analysis and bearing defect frequencies (tsrmon/analytics/envelope.py)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsrmon.analytics import envelope as E
from tsrmon.analytics import spectrum as S
from tsrmon.analytics.moments import Moments
from tsrmon.analytics.signals import BEARING_6205, FaultSignal, impulses, noise, tone

RATE = 25600


def am(n, fc=3000.0, fm=37.0, depth=0.5):
    t = np.arange(n) / RATE
    return (1 + depth * np.cos(2 * np.pi * fm * t)) * np.cos(2 * np.pi * fc * t)


def test_hilbert_envelope_of_an_am_carrier():
    n = 32768
    x = am(n)
    env = E.envelope(x, RATE, (2000, 4000))
    t = np.arange(n) / RATE
    truth = 1 + 0.5 * np.cos(2 * np.pi * 37 * t)
    # Away from the block edges (circular FFT filter) it is the modulation.
    inner = slice(2000, n - 2000)
    np.testing.assert_allclose(env[inner], truth[inner], atol=2e-3)


def test_envelope_spectrum_reads_the_modulation_as_rms():
    spec = E.envelope_spectrum_of(am(10 * RATE), RATE, band=(2000, 4000))
    assert spec.rms.dtype == np.float32
    assert spec.fmax <= 500.0 + spec.df
    (f, a), = S.peaks(spec, 1)
    assert abs(f - 37.0) <= spec.df
    assert a == pytest.approx(0.5 / math.sqrt(2), rel=2e-3)     # depth 0.5 → 0.354 RMS


def test_envelope_ignores_energy_outside_the_band():
    x = am(6 * RATE) + tone(RATE, 6 * RATE, 120.0, 5.0) + tone(RATE, 6 * RATE, 8000.0, 2.0)
    spec = E.envelope_spectrum_of(x, RATE, band=(2000, 4000))
    (f, a), = S.peaks(spec, 1)
    assert abs(f - 37.0) <= spec.df
    assert a == pytest.approx(0.3536, rel=5e-3)


def test_decimated_streaming_envelope_matches_full_rate_reference():
    """The streaming path's short inverse FFT gives the envelope spectrum of
    |analytic signal| at full rate."""
    rng = np.random.default_rng(4)
    x = impulses(RATE, 32768, 71.0, 1.0, 3300.0) + 0.05 * rng.standard_normal(32768)
    e = E.EnvelopeSpectrum(RATE, band=(2000, 5000))
    assert e.m < e.n                          # it does decimate
    e.feed(x)
    fast = e.take_fine()
    w = S.hann(32768)
    env = np.abs(E.analytic_band(x, RATE, (e.k_lo * e.bin_df, e.k_hi * e.bin_df), window=w))
    env -= env.sum() / w.sum() * w
    ref = S.block_powers(env[None, :], np.ones(32768), float(np.dot(w, w)))[0]
    k = int(500 / e.bin_df)
    # |z| is not band-limited, so the short inverse FFT aliases a little of
    # its high-frequency tail: bins agree to 0.1 % of the largest, and the
    # 0–500 Hz power to 0.1 %.
    np.testing.assert_allclose(fast.power[:k], ref[:k], rtol=0, atol=1e-3 * ref[:k].max())
    assert fast.power[:k].sum() == pytest.approx(ref[:k].sum(), rel=1e-3)


def test_periodic_impulses_high_crest_kurtosis_and_envelope_lines():
    rep = 47.0
    x = impulses(RATE, 8 * RATE, rep, 1.0, 4000.0, 0.0005) + noise(8 * RATE, 0.02, seed=2)
    m = Moments.of(x)
    assert m.crest > 6            # a sine is 1.41, Gaussian noise about 4–5
    assert m.kurtosis > 10        # Gaussian 3
    spec = E.envelope_spectrum_of(x, RATE, band=(2500, 6000))
    top = S.peaks(spec, 4)
    got = sorted(f for f, _ in top)
    for h, f in enumerate(got, 1):
        assert abs(f - h * rep) <= spec.df, (h, f)


def test_bearing_factors_6205():
    f = E.bearing_factors(**BEARING_6205)
    # Published SKF 6205 orders: BPFO 3.585, BPFI 5.415, BSF 2.357, FTF 0.398.
    assert f["bpfo"] == pytest.approx(3.585, abs=5e-4)
    assert f["bpfi"] == pytest.approx(5.415, abs=5e-4)
    assert f["bsf"] == pytest.approx(2.357, abs=5e-4)
    assert f["ftf"] == pytest.approx(0.398, abs=5e-4)
    assert f["bpfo"] + f["bpfi"] == pytest.approx(9)        # n balls
    assert f["ftf"] * 9 == pytest.approx(f["bpfo"])          # BPFO = n × FTF
    angled = E.bearing_factors(9, 7.94, 39.04, contact_angle=40)
    assert angled["bpfo"] > f["bpfo"] and angled["bpfi"] < f["bpfi"]
    assert E.defect_frequencies(1500, f)["bpfo"] == pytest.approx(3.585 * 25, abs=0.02)


@pytest.mark.parametrize("args", [
    (2, 7.94, 39.04, 0), (9, 40.0, 39.04, 0), (9, 0, 39.04, 0), (9, 7.94, 39.04, 90),
    (9.5, 7.94, 39.04, 0),
])
def test_bad_geometry_is_refused(args):
    with pytest.raises(ValueError, match="bearing"):
        E.bearing_factors(*args)


def test_bearing_from_config_geometry_or_factors():
    assert E.bearing_from_config(BEARING_6205) == E.bearing_factors(**BEARING_6205)
    assert E.bearing_from_config({"bpfo": 3.2, "bpfi": 4.8}) == {"bpfo": 3.2, "bpfi": 4.8}
    with pytest.raises(ValueError, match="not both"):
        E.bearing_from_config(dict(BEARING_6205, bpfo=3.0))
    with pytest.raises(ValueError, match="unknown"):
        E.bearing_from_config({"bpfx": 3.0})
    with pytest.raises(ValueError, match="bpfo"):
        E.bearing_from_config({"bpfo": -1})
    with pytest.raises(ValueError, match="none"):
        E.check_factors({})


def test_outer_race_defect_shows_at_bpfo():
    rpm = 1500.0
    sig = FaultSignal(RATE, "outer_race", rpm=rpm, level=0.5, sigma=0.05, jitter=0.01, seed=3)
    x = sig.read(10 * RATE)
    spec = E.envelope_spectrum_of(x, RATE, band=(2000, 5000))
    tones = E.bearing_tones(spec, rpm, sig.factors, harmonics=3)
    bpfo = sig.factors["bpfo"] * rpm / 60
    (h1, f1, a1) = tones["bpfo"][0]
    assert h1 == 1 and abs(f1 - bpfo) <= 2 * spec.df
    # BPFO and its harmonics stand far above the other defects' fundamentals.
    others = [tones[k][0][2] for k in ("bpfi", "bsf", "ftf")]
    assert a1 > 10 * max(others)
    assert [h for h, _, _ in tones["bpfo"]] == [1, 2, 3]
    assert all(a > 10 * max(others) for _, _, a in tones["bpfo"])
    # The strongest envelope line is BPFO.
    (f, _), = S.peaks(spec, 1)
    assert abs(f - bpfo) <= 2 * spec.df


def test_inner_race_defect_shows_at_bpfi_with_shaft_sidebands():
    rpm = 1500.0
    sig = FaultSignal(RATE, "inner_race", rpm=rpm, level=0.5, sigma=0.05, seed=4)
    spec = E.envelope_spectrum_of(sig.read(10 * RATE), RATE, band=(2000, 5000))
    tones = E.bearing_tones(spec, rpm, sig.factors, harmonics=1, tol=0.005)
    assert tones["bpfi"][0][2] > 10 * tones["bpfo"][0][2]
    bpfi, fr = sig.factors["bpfi"] * 25, 25.0
    side = S.amplitude_near(spec, bpfi - fr, tol=0.005)[1]
    assert side > 0.2 * tones["bpfi"][0][2]           # modulation by the shaft


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(0, 40000), max_size=8))
def test_envelope_chunking_does_not_change_the_spectrum(cuts):
    x = impulses(RATE, 40000, 60.0, 1.0, 3000.0) + noise(40000, 0.01, seed=1)
    one = E.EnvelopeSpectrum(RATE, band=(1500, 6000))
    one.feed(x)
    two = E.EnvelopeSpectrum(RATE, band=(1500, 6000))
    bounds = sorted(set(cuts) | {0, x.size})
    for a, b in zip(bounds, bounds[1:]):
        two.feed(x[a:b])
    np.testing.assert_allclose(two.take().rms, one.take().rms, rtol=1e-5, atol=1e-9)


def test_bad_bands_are_refused():
    with pytest.raises(ValueError, match="band"):
        E.EnvelopeSpectrum(RATE, band=(5000, 2000))
    with pytest.raises(ValueError, match="band"):
        E.EnvelopeSpectrum(RATE, band=(1000, 20000))
    with pytest.raises(ValueError, match="env_fmax"):
        E.EnvelopeSpectrum(RATE, band=(2000, 2100), env_fmax=20000)
    assert E.default_band(RATE) == pytest.approx((1000.0, 10000.0))
