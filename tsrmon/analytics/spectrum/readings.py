"""Figures read off a line spectrum: band RMS, velocity RMS (ISO 10816-3
integration), a tone's RMS, the highest peaks, the amplitude near a
frequency and running-speed orders."""

import math

import numpy as np

G_MM_S2 = 9806.65          # 1 g in mm/s² (standard gravity)


def _line_weights(spec, f_lo, f_hi):
    """Fraction of each value's cell ``[f - df/2, f + df/2)`` inside [f_lo, f_hi]."""
    f = spec.freqs
    lo = np.maximum(f - spec.df / 2, f_lo)
    hi = np.minimum(f + spec.df / 2, f_hi)
    return np.clip((hi - lo) / spec.df, 0.0, 1.0)


def band_rms(spec, f_lo, f_hi):
    """RMS of the band [f_lo, f_hi] Hz (cells cut by the band edges count by
    the fraction inside)."""
    if f_hi <= f_lo:
        raise ValueError("band_rms: empty band %r..%r Hz" % (f_lo, f_hi))
    w = _line_weights(spec, f_lo, f_hi)
    return float(math.sqrt(np.add.reduce(w * spec.power)))


def bands_rms(spec, bands):
    """``{name: rms}`` for ``bands`` = ``{name: (f_lo, f_hi)}``."""
    return {name: band_rms(spec, lo, hi) for name, (lo, hi) in bands.items()}


def velocity_rms(spec, accel_to_mm_s2=G_MM_S2, f_lo=10.0, f_hi=1000.0):
    """Velocity RMS in mm/s over [f_lo, f_hi] from an acceleration spectrum.

    ISO 10816-3 frequency-domain integration: each line's acceleration RMS
    (× ``accel_to_mm_s2``: 9806.65 for g, 1000 for m/s²) is divided by
    ``2πf``; v_rms = √Σ v_k².  Raises ValueError when the spectrum does not
    reach ``f_hi`` (it cannot give the ISO figure).
    """
    if spec.fmax + spec.df / 2 < f_hi:
        raise ValueError("velocity_rms: spectrum ends at %g Hz, below %g Hz"
                         % (spec.fmax + spec.df / 2, f_hi))
    f = spec.freqs
    w = _line_weights(spec, f_lo, f_hi)
    keep = (w > 0) & (f > 0)
    v = spec.power[keep] * (accel_to_mm_s2 / (2 * np.pi * f[keep])) ** 2
    return float(math.sqrt(np.add.reduce(w[keep] * v)))


def _parabolic(y, k):
    """Vertex offset (−½..½) of the parabola through y[k-1], y[k], y[k+1]
    (linear amplitudes: robust when the neighbours are at the noise floor,
    within ~0.1 of a value for a Hann main lobe)."""
    if k <= 0 or k >= y.size - 1:
        return 0.0
    a, b, c = float(y[k - 1]), float(y[k]), float(y[k + 1])
    den = a - 2 * b + c
    if den >= 0:
        return 0.0
    return float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))


def tone_rms(spec, k, half=None):
    """RMS of values k-half..k+half (default ``spec.lobe``): the whole energy
    of a tone whose window main lobe falls on value k."""
    if half is None:
        half = spec.lobe
    lo, hi = max(k - half, 0), min(k + half + 1, spec.rms.size)
    return float(math.sqrt(spec.power[lo:hi].sum()))


def peaks(spec, top=10, f_lo=None, f_hi=None, half=None):
    """The ``top`` highest local maxima as ``[(frequency Hz, rms)]``,
    highest first.  Frequency by parabolic interpolation of the amplitudes;
    amplitude = :func:`tone_rms` over ±``half`` values (a tone split between
    two lines still reads its full A/√2)."""
    if half is None:
        half = spec.lobe
    y = spec.rms.astype(np.float64)
    if y.size < 3:
        return []
    inner = (y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:]) & (y[1:-1] > 0)
    idx = np.nonzero(inner)[0] + 1
    f = spec.freqs
    if f_lo is not None:
        idx = idx[f[idx] >= f_lo]
    if f_hi is not None:
        idx = idx[f[idx] <= f_hi]
    # Rank by tone energy, not the single value, then keep maxima that are
    # not within ±half of a higher one.
    cum = np.concatenate(([0.0], np.cumsum(spec.power)))
    amps = np.sqrt(np.maximum(cum[np.minimum(idx + half + 1, y.size)]
                              - cum[np.maximum(idx - half, 0)], 0.0))
    order = np.argsort(-amps, kind="stable")
    out, taken = [], []
    for j in order:
        k = int(idx[j])
        if any(abs(k - t) <= half for t in taken):
            continue
        taken.append(k)
        out.append((float(f[k] + _parabolic(y, k) * spec.df), float(amps[j])))
        if len(out) >= top:
            break
    return out


def amplitude_near(spec, freq, tol=0.02, half=None):
    """``(frequency, rms)`` of the strongest value within ±max(tol·freq, df)
    of ``freq`` (speed and slip are never exact), with :func:`tone_rms`
    around it; None when ``freq`` is outside the spectrum."""
    if freq <= 0 or freq > spec.fmax + spec.df / 2 or freq < spec.f0 - spec.df / 2:
        return None
    w = max(tol * freq, spec.df)
    f = spec.freqs
    lo = int(np.searchsorted(f, freq - w, "left"))
    hi = int(np.searchsorted(f, freq + w, "right"))
    if hi <= lo:
        k = int(round((freq - spec.f0) / spec.df))
    else:
        k = lo + int(np.argmax(spec.rms[lo:hi]))
    k = min(max(k, 0), spec.rms.size - 1)
    return (float(f[k] + _parabolic(spec.rms.astype(np.float64), k) * spec.df),
            tone_rms(spec, k, half))


def orders(spec, rpm, n=(1, 2, 3), tol=0.02):
    """``{order: (frequency, rms)}`` at n × running speed (rpm / 60 Hz);
    orders above the spectrum are left out."""
    if not rpm or rpm <= 0:
        raise ValueError("orders: rpm must be > 0, got %r" % (rpm,))
    f1 = rpm / 60.0
    out = {}
    for k in n:
        got = amplitude_near(spec, k * f1, tol)
        if got is not None:
            out[k] = got
    return out
