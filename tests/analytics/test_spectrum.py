"""Spectra (tsrmon/analytics/spectrum/: welch, minutes, readings): analytic answers and streaming."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsrmon.analytics import spectrum as S
from tsrmon.analytics.signals import noise, tone

RATE = 25600
VELOCITY_50HZ = 9.80665 / (2 * math.pi * 50) / math.sqrt(2) * 1000     # 22.07 mm/s


@pytest.fixture(scope="module")
def tone50():
    x = tone(RATE, 10 * RATE, 50.0, 1.0)
    return S.spectrum_of(x, RATE)


def test_block_sizes():
    assert S.block_size(25600) == 32768
    assert S.block_size(1000) == 8192
    assert S.block_size(8192) == 8192
    assert S.block_size(40000) == 65536
    assert S.block_size(25600, "second") == 25600
    with pytest.raises(ValueError):
        S.block_size(0)
    with pytest.raises(ValueError):
        S.block_size(1000, "fortnight")


def test_shared_windows_are_built_once_read_only_and_exact():
    windows = S.Windows()
    a = S.WelchSpectrum(RATE, windows=windows)
    b = S.WelchSpectrum(RATE, windows=windows)
    assert a.window is b.window and len(windows) == 1
    assert not a.window.flags.writeable
    w = S.hann(32768)
    assert np.array_equal(a.window, w)
    # Periodic Hann: Σw² = 3N/8 and Σw = N/2.
    assert a.wss == pytest.approx(float(np.dot(w, w)), rel=1e-12) == pytest.approx(3 * 32768 / 8)
    assert windows.get(32768).wsum == pytest.approx(32768 / 2)
    # An analyser without shared windows gets its own, the same values.
    c = S.WelchSpectrum(RATE)
    assert c.window is not a.window and np.array_equal(c.window, a.window) and c.wss == a.wss


def test_lines_layout(tone50):
    lines, fine = tone50
    assert len(lines) == 1600 and lines.rms.dtype == np.float32
    assert lines.df == pytest.approx(6.25) and lines.f0 == pytest.approx(6.25)
    assert lines.fmax == pytest.approx(RATE / 2.56)          # 10 kHz
    assert fine.df == pytest.approx(RATE / 32768)
    # 10 s, 32768-sample blocks, hop 16384: (256000 - 32768) // 16384 + 1
    assert lines.blocks == fine.blocks == 14


def test_1g_50hz_tone_rms_velocity_peak(tone50):
    lines, fine = tone50
    assert lines.total_rms() == pytest.approx(0.7071, abs=1e-4)
    assert S.velocity_rms(lines) == pytest.approx(VELOCITY_50HZ, rel=1e-3)
    assert S.velocity_rms(fine) == pytest.approx(VELOCITY_50HZ, rel=1e-3)
    assert VELOCITY_50HZ == pytest.approx(22.07, abs=0.005)
    (f, a), = S.peaks(lines, top=1)
    assert abs(f - 50.0) <= lines.df
    assert a == pytest.approx(1 / math.sqrt(2), rel=1e-4)
    (f, a), = S.peaks(fine, top=1)
    assert abs(f - 50.0) <= fine.df


@pytest.mark.parametrize("freq", [50.0, 53.1, 97.3, 1234.567, 8000.4])
@pytest.mark.parametrize("amp", [0.01, 2.5])
def test_amplitude_convention_rms_not_peak(freq, amp):
    """A sine of amplitude A reads A/√2 at its line, wherever it falls
    between bins and lines (Hann, energy correction)."""
    x = tone(RATE, 3 * RATE, freq, amp, 0.4)
    lines, fine = S.spectrum_of(x, RATE)
    for spec in (lines, fine):
        (f, a), = S.peaks(spec, top=1)
        assert a == pytest.approx(amp / math.sqrt(2), rel=2e-3)
        assert abs(f - freq) <= spec.df
        assert S.band_rms(spec, freq - 20, freq + 20) == pytest.approx(
            amp / math.sqrt(2), rel=2e-3)


def test_peaks_are_ranked_and_separate():
    x = (tone(RATE, 4 * RATE, 120.0, 1.0) + tone(RATE, 4 * RATE, 400.0, 0.5)
         + tone(RATE, 4 * RATE, 2500.0, 0.25))
    lines, _ = S.spectrum_of(x, RATE)
    got = S.peaks(lines, top=3)
    assert [round(f / 10) * 10 for f, _ in got] == [120, 400, 2500]
    assert [a for _, a in got] == pytest.approx([0.7071, 0.3536, 0.1768], rel=2e-3)
    assert S.peaks(lines, top=2, f_lo=300) == got[1:]


def test_two_tones_add_in_quadrature_in_velocity():
    x = tone(RATE, 4 * RATE, 50.0, 1.0) + tone(RATE, 4 * RATE, 150.0, 1.0)
    lines, _ = S.spectrum_of(x, RATE)
    v = lambda f: 9806.65 / (2 * math.pi * f) / math.sqrt(2)
    assert S.velocity_rms(lines) == pytest.approx(math.hypot(v(50), v(150)), rel=1e-3)
    # A 2 kHz tone is outside 10–1000 Hz: it adds nothing.
    y = x + tone(RATE, 4 * RATE, 2000.0, 5.0)
    assert S.velocity_rms(S.spectrum_of(y, RATE)[0]) == pytest.approx(
        math.hypot(v(50), v(150)), rel=1e-3)


def test_velocity_from_m_s2_units():
    x = tone(RATE, 2 * RATE, 80.0, 9.80665)          # 1 g expressed in m/s²
    _, fine = S.spectrum_of(x, RATE)
    expect = 9806.65 / (2 * math.pi * 80) / math.sqrt(2)
    assert S.velocity_rms(fine, accel_to_mm_s2=1000.0) == pytest.approx(expect, rel=1e-3)


@pytest.mark.parametrize("freq", [12.0, 33.3, 80.0, 440.0, 997.0])
def test_velocity_from_fine_bins_within_half_percent(freq):
    # Tones at least a Hann main lobe (2 bins, 1.6 Hz) inside 10–1000 Hz.
    x = tone(RATE, 3 * RATE, freq, 1.0, 0.2)
    _, fine = S.spectrum_of(x, RATE)
    expect = 9806.65 / (2 * math.pi * freq) / math.sqrt(2)
    assert S.velocity_rms(fine) == pytest.approx(expect, rel=5e-3)


@pytest.mark.parametrize("freq", [33.3, 80.0, 440.0, 990.0])
def test_velocity_from_lines_within_half_a_line(freq):
    """From 6.25-Hz lines a tone is weighted by its line's centre frequency:
    the error is bounded by Δf / (2f) (documented; the daemon integrates
    the fine spectrum)."""
    x = tone(RATE, 3 * RATE, freq, 1.0, 0.2)
    lines, _ = S.spectrum_of(x, RATE)
    expect = 9806.65 / (2 * math.pi * freq) / math.sqrt(2)
    bound = lines.df / 2 / (freq - lines.df / 2)
    assert S.velocity_rms(lines) == pytest.approx(expect, rel=bound)


def test_velocity_refused_when_spectrum_stops_below_1khz():
    x = tone(2000, 20000, 50.0)
    lines, _ = S.spectrum_of(x, 2000)                # fmax = 781 Hz
    with pytest.raises(ValueError, match="below 1000 Hz"):
        S.velocity_rms(lines)


def test_white_noise_power_is_preserved():
    """Parseval: the line spectrum's total RMS is the signal's RMS."""
    x = noise(8 * RATE, 0.5, seed=3)
    lines, fine = S.spectrum_of(x, RATE, fmax=RATE / 2, lines=3200)
    assert fine.total_rms() == pytest.approx(0.5, rel=0.01)
    assert lines.total_rms() == pytest.approx(fine.total_rms(), rel=1e-3)
    # Flat: the 0–5 kHz band holds 5/12.8 of the power.
    assert S.band_rms(lines, 0, 5000) ** 2 == pytest.approx(0.25 * 5000 / 12800, rel=0.03)


@settings(max_examples=40, deadline=None)
@given(
    powers=st.lists(st.floats(0, 10), min_size=8, max_size=200),
    bin_df=st.floats(0.1, 5.0),
    lines=st.integers(3, 120),
)
def test_to_lines_preserves_power(powers, bin_df, lines):
    """Each line holds the power of the bin cells it overlaps, by overlap
    (brute force over every bin/line pair), and no power is made or lost."""
    p = np.asarray(powers)
    fmax = (p.size - 1) * bin_df
    out = S.to_lines(p, bin_df, fmax, lines)
    dfl = fmax / lines
    expect = np.zeros(lines)
    for k in range(1, lines + 1):
        lo, hi = (k - 0.5) * dfl, (k + 0.5) * dfl
        for j, pj in enumerate(p):
            a, b = (j - 0.5) * bin_df, (j + 0.5) * bin_df
            expect[k - 1] += pj * max(0.0, min(b, hi) - max(a, lo)) / bin_df
    np.testing.assert_allclose(out ** 2, expect, rtol=1e-9, atol=1e-9)
    assert out.size == lines


def test_band_rms_counts_cut_lines_by_fraction():
    spec = S.Spectrum(1.0, 1.0, np.ones(100))        # 1 Hz lines, 1 (unit)² each
    assert S.band_rms(spec, 10.0, 20.0) ** 2 == pytest.approx(10.0)
    assert S.band_rms(spec, 10.25, 10.75) ** 2 == pytest.approx(0.5)
    assert S.bands_rms(spec, {"a": (0, 5.5), "b": (50, 60)}) == pytest.approx(
        {"a": math.sqrt(5.0), "b": math.sqrt(10.0)})
    with pytest.raises(ValueError):
        S.band_rms(spec, 5, 5)


def test_orders_given_rpm():
    rpm = 1480.0
    f1 = rpm / 60
    x = (tone(RATE, 4 * RATE, f1, 0.8) + tone(RATE, 4 * RATE, 2 * f1, 0.4, 1.0)
         + tone(RATE, 4 * RATE, 3 * f1, 0.1, 2.0) + noise(4 * RATE, 0.01, seed=1))
    lines, fine = S.spectrum_of(x, RATE)
    for spec in (lines, fine):
        got = S.orders(spec, rpm)
        assert sorted(got) == [1, 2, 3]
        for k, amp in ((1, 0.8), (2, 0.4), (3, 0.1)):
            f, a = got[k]
            assert abs(f - k * f1) <= spec.df
            assert a == pytest.approx(amp / math.sqrt(2), rel=0.02)
    with pytest.raises(ValueError):
        S.orders(lines, 0)


def test_orders_find_the_tone_despite_slip():
    # Nameplate 1500 rpm, true 1470 (2 % slip): the 2 % search finds it.
    x = tone(RATE, 4 * RATE, 1470 / 60, 1.0)
    (f, a) = S.orders(S.spectrum_of(x, RATE)[1], 1500)[1]
    assert abs(f - 24.5) < 0.2 and a == pytest.approx(0.7071, rel=1e-3)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 3 * 8192), max_size=12))
def test_chunking_does_not_change_the_welch_spectrum(cuts):
    rate = 4096
    x = noise(3 * 8192, 1.0, seed=11) + tone(rate, 3 * 8192, 100.0)
    one = S.WelchSpectrum(rate)
    one.feed(x)
    split = S.WelchSpectrum(rate)
    bounds = sorted(set(cuts) | {0, x.size})
    for a, b in zip(bounds, bounds[1:]):
        split.feed(x[a:b])
    assert split.blocks == one.blocks == 5
    a, b = one.take_fine(), split.take_fine()
    np.testing.assert_allclose(b.rms, a.rms, rtol=1e-9, atol=1e-15)


def test_take_resets_the_average_but_keeps_the_carry():
    w = S.WelchSpectrum(RATE)
    x = tone(RATE, 3 * 32768, 50.0)
    w.feed(x[:40000])
    assert w.blocks == 1
    lines, fine = w.take()
    assert lines.blocks == 1 and w.blocks == 0
    assert w.take() == (None, None)
    w.feed(x[40000:])        # the block at 16384 overlaps the first take
    assert w.blocks == 4


def test_minute_accumulator_per_minute_blocks():
    acc = S.MinuteSpectra(RATE)
    t0 = 1_700_000_000 - 1_700_000_000 % 60 + 30.0          # half past a minute
    out = []
    src = tone(RATE, 120 * RATE, 50.0)
    for s in range(120):                                       # 2 minutes of 1-s chunks
        out += acc.add(t0 + s, src[s * RATE:(s + 1) * RATE])
    tail = acc.flush()
    minutes = [r.minute for r in out] + [tail.minute]
    assert minutes == [t0 - 30, t0 + 30, t0 + 90]
    # Blocks end every 0.64 s once the first 1.28 s are in: each end time
    # falls in exactly one minute.
    ends = [t0 + (32768 + 16384 * i) / RATE for i in range(1000)]
    ends = [e for e in ends if e <= t0 + 120]
    for r in out + [tail]:
        assert r.lines.blocks == sum(r.minute <= e < r.minute + 60 for e in ends)
        (f, a), = S.peaks(r.lines, 1)
        assert abs(f - 50) <= 6.25 and a == pytest.approx(0.7071, rel=1e-4)
    assert acc.flush() is None


def test_minute_accumulator_drops_carry_across_a_gap_but_not_jitter():
    acc = S.MinuteSpectra(RATE, max_gap=2.0)
    t0 = 1_700_000_040.0
    x = tone(RATE, RATE, 50.0)
    acc.add(t0, x)
    acc.add(t0 + 1.3, x)                       # arrival jitter: contiguous
    assert acc.welch.blocks == 2               # 51200 samples: blocks at 0 and 16384
    acc.add(t0 + 10.0, x[:10000])              # a gap: carry dropped
    assert acc.welch._carry.size == 10000
    r = acc.flush()
    assert r.lines.blocks == 2


def test_average_and_hour_average_weight_by_blocks():
    a = S.Spectrum(1.0, 1.0, np.full(4, 1.0, np.float32), blocks=1)
    b = S.Spectrum(1.0, 1.0, np.full(4, 2.0, np.float32), blocks=3)
    avg = S.average([a, None, b])
    assert avg.blocks == 4 and avg.rms.dtype == np.float32
    np.testing.assert_allclose(avg.rms, math.sqrt((1 + 3 * 4) / 4), rtol=1e-6)
    h = S.HourAverage()
    assert h.take() is None
    h.add(a)
    h.add(b)
    np.testing.assert_allclose(h.take().rms, avg.rms)
    with pytest.raises(ValueError):
        S.average([a, S.Spectrum(1.0, 2.0, np.ones(4), 1)])


def test_hourly_average_of_minutes_is_the_hour_welch():
    w = S.WelchSpectrum(RATE)
    whole = S.WelchSpectrum(RATE)
    x = noise(6 * RATE, 1.0, seed=5)
    minutes = []
    for part in np.array_split(x, 3):
        w.feed(part)
        minutes.append(w.take()[0])
    whole.feed(x)
    np.testing.assert_allclose(S.average(minutes).rms, whole.take()[0].rms, rtol=1e-5)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        S.WelchSpectrum(0)
    with pytest.raises(ValueError):
        S.WelchSpectrum(1000, fmax=600)
    with pytest.raises(ValueError):
        S.WelchSpectrum(1000, overlap=1.0)


def test_non_finite_chunks_are_refused_and_leave_the_average_alone():
    w = S.WelchSpectrum(RATE)
    x = tone(RATE, 2 * RATE, 50.0)
    w.feed(x[:RATE])
    for bad in (np.nan, np.inf, -np.inf):
        y = x[RATE:].copy()
        y[100] = bad
        with pytest.raises(ValueError, match="non-finite"):
            w.feed(y)
    w.feed(x[RATE:])
    clean = S.WelchSpectrum(RATE)
    clean.feed(x)
    np.testing.assert_array_equal(w.take()[0].rms, clean.take()[0].rms)
    acc = S.MinuteSpectra(RATE)
    acc.add(1_700_000_040.0, x[:RATE])
    y = x[RATE:].copy()
    y[5] = np.nan
    with pytest.raises(ValueError, match="refused"):
        acc.add(1_700_000_041.0, y)
    assert acc.welch._carry.size == 0          # the hole is a gap
    acc.add(1_700_000_042.0, x[:RATE])
    # 25,600 samples each side of the hole: contiguous they would make a
    # 32,768-sample block; across the gap they make none.
    assert acc.flush() is None


def test_a_spectrum_without_maxima_has_no_peaks():
    flat = S.Spectrum(1.0, 1.0, np.ones(50))
    assert S.peaks(flat) == []
    assert S.peaks(S.Spectrum(1.0, 1.0, np.ones(2))) == []


def test_late_data_lands_in_its_own_minutes_and_merges():
    """A DAQ's offline buffer (older times) between live chunks: each block
    goes to the minute of its samples; a minute returned twice merges by
    :func:`average` into what one pass would give."""
    acc = S.MinuteSpectra(RATE)
    live0 = 1_700_000_040.0 - 1_700_000_040.0 % 60 + 10     # 10 s into a minute
    x = tone(RATE, 20 * RATE, 50.0) + noise(20 * RATE, 0.1, seed=8)
    got = []
    for s in range(5):                                        # live: 5 s
        got += acc.add(live0 + s, x[s * RATE:(s + 1) * RATE])
    late0 = live0 - 3600                                      # an hour ago: 10 s
    for s in range(10):
        got += acc.add(late0 + s, x[(5 + s) * RATE:(6 + s) * RATE])
    for s in range(5, 10):                                    # live again
        got += acc.add(live0 + s, x[(10 + s) * RATE:(11 + s) * RATE])
    got.append(acc.flush())
    by_minute = {}
    for r in got:
        by_minute.setdefault(r.minute, []).append(r.lines)
    live_m, late_m = live0 - 10, late0 - 10
    assert sorted(by_minute) == [late_m, live_m]
    assert len(by_minute[live_m]) == 2 and len(by_minute[late_m]) == 1
    # The live minute, merged, equals the two live stretches analysed alone.
    ref = S.WelchSpectrum(RATE)
    ref.feed(x[:5 * RATE])
    ref.reset()
    ref.feed(x[15 * RATE:20 * RATE])
    merged = S.average(by_minute[live_m])
    expect = ref.take()[0]
    assert merged.blocks == expect.blocks == 2 * 6
    np.testing.assert_allclose(merged.rms, expect.rms, rtol=1e-5)
    assert by_minute[late_m][0].blocks == 14


def test_pack_unpack_roundtrip():
    lines, _ = S.spectrum_of(tone(RATE, 2 * RATE, 50.0), RATE)
    blob = S.pack(lines)
    assert len(blob) == 1600 * 4
    back = S.unpack(blob, lines.f0, lines.df, lines.blocks, RATE)
    np.testing.assert_array_equal(back.rms, lines.rms)
    assert back.freqs[7] == 50.0
    with pytest.raises(ValueError):
        S.unpack(b"abc", 1.0, 1.0)


def test_waterfall_decimation_keeps_power():
    rng = np.random.default_rng(0)
    specs = [S.Spectrum(6.25, 6.25, rng.random(1600).astype(np.float32), blocks=b)
             for b in (14, 14, 13, 14, 1, 14, 14)]
    groups, f0, df, rms = S.waterfall(specs, rows=3, lines=400)
    assert rms.shape == (3, 400) and rms.dtype == np.float32
    assert groups == [[0, 1, 2], [3, 4, 5], [6]]
    assert df == 25.0 and f0 == pytest.approx(6.25 + 1.5 * 6.25)
    # A column is the RMS of its four lines; a row the block-weighted power mean.
    w = np.array([14, 14, 13.0])
    p = sum(wi * specs[i].power for wi, i in zip(w, groups[0])) / w.sum()
    np.testing.assert_allclose(rms[0] ** 2, p.reshape(400, 4).sum(axis=1), rtol=1e-5)
    # Uneven line groups: 1600 lines into at most 300 columns → 6 per column, 267 columns.
    _, _, df2, rms2 = S.waterfall(specs, rows=None, lines=300)
    assert rms2.shape == (7, 267) and df2 == 6 * 6.25
    np.testing.assert_allclose((rms2 ** 2).sum(axis=1), [s.power.sum() for s in specs], rtol=1e-5)
    assert S.waterfall([])[3].shape == (0, 0)
    with pytest.raises(ValueError):
        S.waterfall(specs, rows=0)
    with pytest.raises(ValueError):
        S.waterfall(specs + [S.Spectrum(1.0, 1.0, np.ones(1600))])
