"""Envelope analysis for rolling-element bearings.

A defect on a race or ball strikes once per passage and rings the structure's
resonances (kHz); the strikes repeat at the defect frequency (Hz to a few
hundred Hz).  The envelope of the band around the resonance brings the
repetition rate down to where a spectrum shows it:

1. each Hann-windowed block's rfft is cut to the band ``[f_lo, f_hi]``
   (band-pass in the frequency domain);
2. the analytic signal of that band (positive bins doubled, the rest zero)
   is taken by an inverse FFT; its magnitude is the Hilbert envelope.  The
   band is shifted to baseband first, which leaves the magnitude unchanged,
   so the inverse FFT is only ``M`` long (``M`` a power of two ≥ 2 × band
   width in bins): the envelope comes out decimated, at ``M / N`` of the rate;
3. the envelope's mean is removed and its spectrum taken with the same
   RMS-per-line convention as :mod:`tsrmon.analytics.spectrum` (the Hann
   window applied in step 1 passes through the magnitude, so it is the
   envelope's window too), averaged over blocks (Welch, 50 % overlap).

Bearing defect frequencies (shaft frequency ``fr = rpm / 60``, ``n`` rolling
elements, ball diameter ``d``, pitch diameter ``D``, contact angle ``α``,
``r = d/D·cos α``):

- BPFO = n/2 · (1 − r) · fr   (outer race)
- BPFI = n/2 · (1 + r) · fr   (inner race)
- BSF  = D/(2d) · (1 − r²) · fr   (ball spin; a ball defect strikes at 2×BSF)
- FTF  = 1/2 · (1 − r) · fr   (cage)
"""

import math

import numpy as np

from tsrmon.analytics.spectrum.readings import amplitude_near
from tsrmon.analytics.spectrum.welch import Spectrum, WelchSpectrum

DEFECTS = ("bpfo", "bpfi", "bsf", "ftf")


def default_band(rate):
    """The band enveloped when none is configured: 0.1·fmax .. fmax
    (fmax = rate/2.56; 1–10 kHz at 25.6 kHz), above shaft harmonics."""
    fmax = rate / 2.56
    return (0.1 * fmax, fmax)


def _band_bins(n, rate, band):
    lo, hi = band
    if not 0 < lo < hi <= rate / 2:
        raise ValueError("envelope band %r Hz must satisfy 0 < low < high <= rate/2 (%g)"
                         % (band, rate / 2))
    df = rate / n
    k_lo = max(1, int(math.ceil(lo / df)))
    k_hi = min(n // 2 - 1, int(math.floor(hi / df)))
    if k_hi < k_lo:
        raise ValueError("envelope band %r Hz holds no FFT bin at %g Hz spacing" % (band, df))
    return k_lo, k_hi


def _fast_size(need):
    """The smallest 2^a·3^b ≥ need: pocketfft is as fast on these as on a
    power of two, and a 1–10 kHz band at N = 32,768 needs 24,576, not 32,768."""
    best = 1 << (need - 1).bit_length()
    p3 = 1
    while p3 < best:
        m = p3 * (1 << max(0, (-(-need // p3) - 1).bit_length()))
        if need <= m < best:
            best = m
        p3 *= 3
    return best


def _decimated_size(n, k_count, rate, env_fmax):
    df = rate / n
    need = max(2 * k_count, int(math.ceil(2.56 * env_fmax / df)), 16)
    # Even, so the envelope's rfft has its Nyquist bin.
    m = 2 * _fast_size(-(-need // 2))
    return min(m, n)


def analytic_band(x, rate, band, window=None):
    """The band-limited analytic signal of ``x`` (full rate, complex), by
    FFT: bins outside ``band`` zeroed, positive bins doubled.  ``|z|`` is the
    Hilbert envelope of the band.  The one-shot reference implementation;
    the streaming path decimates (:class:`EnvelopeSpectrum`)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if window is not None:
        x = x * window
    k_lo, k_hi = _band_bins(n, rate, band)
    X = np.fft.rfft(x)
    Z = np.zeros(n, dtype=np.complex128)
    Z[k_lo:k_hi + 1] = 2 * X[k_lo:k_hi + 1]
    return np.fft.ifft(Z)


def envelope(x, rate, band):
    """Hilbert envelope ``|analytic_band(x)|`` (same length and rate as x)."""
    return np.abs(analytic_band(x, rate, band))


class EnvelopeSpectrum(WelchSpectrum):
    """Streaming envelope spectrum: feed chunks of any length; ``take()``
    gives the Welch-averaged envelope spectrum (bin resolution ``rate/N``,
    0..``env_fmax`` — default 500 Hz, or rate/2.56 when lower — RMS per bin
    in the signal's unit) of the blocks since the last take."""

    def __init__(self, rate, band=None, env_fmax=None, n=None, overlap=0.5, windows=None):
        super().__init__(rate, n=n, overlap=overlap, windows=windows)
        if env_fmax is None:
            env_fmax = min(500.0, self.rate / 2.56)
        self.band = tuple(band) if band else default_band(self.rate)
        self.k_lo, self.k_hi = _band_bins(self.n, self.rate, self.band)
        self.k_count = self.k_hi - self.k_lo + 1
        self.m = _decimated_size(self.n, self.k_count, self.rate, env_fmax)
        self.env_rate = self.rate * self.m / self.n
        if env_fmax > self.env_rate / 2:
            raise ValueError("env_fmax %g Hz above the envelope's Nyquist %g Hz"
                             % (env_fmax, self.env_rate / 2))
        self.env_fmax = float(env_fmax)
        win = self.windows.get(self.m)
        self.m_window = win.w
        self.m_wss = win.wss
        self.m_wsum = win.wsum
        self._keep = int(math.floor(self.env_fmax / self.bin_df)) + 1

    def _nbins(self):
        return self.m // 2 + 1

    def _powers(self, blocks):
        X = np.fft.rfft(blocks * self.window, axis=-1)
        Z = np.zeros((X.shape[0], self.m), dtype=np.complex128)
        Z[:, :self.k_count] = X[:, self.k_lo:self.k_hi + 1]
        # |z| with z = (2/N)·Σ X_k e^{…}; ifft divides by m, hence 2m/N.
        env = np.abs(np.fft.ifft(Z, axis=-1)) * (2.0 * self.m / self.n)
        # env ≈ window × true envelope: remove the mean as window × mean.
        mean = env.sum(axis=-1, keepdims=True) / self.m_wsum
        env -= mean * self.m_window
        E = np.fft.rfft(env, axis=-1)
        p = E.real * E.real + E.imag * E.imag
        p *= 2.0 / (self.m * self.m_wss)
        p[:, 0] *= 0.5
        p[:, -1] *= 0.5
        return p

    def take(self):
        fine = self.take_fine()
        if fine is None:
            return None
        return Spectrum(0.0, fine.df, fine.rms[:self._keep].astype(np.float32),
                        fine.blocks, self.rate, lobe=2)


def envelope_spectrum_of(x, rate, band=None, env_fmax=None, n=None):
    """One-shot envelope spectrum of an array (see :class:`EnvelopeSpectrum`)."""
    e = EnvelopeSpectrum(rate, band=band, env_fmax=env_fmax, n=n)
    e.feed(x)
    return e.take()


# -- bearing defect frequencies ------------------------------------------------

def bearing_factors(n_balls, ball_diameter, pitch_diameter, contact_angle=0.0):
    """Defect frequencies per shaft revolution (orders) from geometry;
    ``contact_angle`` in degrees."""
    n = n_balls
    d, D = float(ball_diameter), float(pitch_diameter)
    if not (isinstance(n, int) and n >= 3):
        raise ValueError("bearing: n_balls must be an integer >= 3, got %r" % (n_balls,))
    if not 0 < d < D:
        raise ValueError("bearing: need 0 < ball_diameter < pitch_diameter, got %r, %r"
                         % (ball_diameter, pitch_diameter))
    if not 0 <= contact_angle < 90:
        raise ValueError("bearing: contact_angle must be in [0, 90) degrees, got %r"
                         % (contact_angle,))
    r = d / D * math.cos(math.radians(contact_angle))
    return {
        "bpfo": n / 2 * (1 - r),
        "bpfi": n / 2 * (1 + r),
        "bsf": D / (2 * d) * (1 - r * r),
        "ftf": 0.5 * (1 - r),
    }


def check_factors(factors):
    """Given factors ``{bpfo, bpfi, bsf, ftf}`` (any subset, orders > 0)."""
    out = {}
    for k, v in factors.items():
        if k not in DEFECTS:
            raise ValueError("bearing factor %r unknown (expected %s)" % (k, ", ".join(DEFECTS)))
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < 1000:
            raise ValueError("bearing factor %s must be a number in (0, 1000), got %r" % (k, v))
        out[k] = float(v)
    if not out:
        raise ValueError("bearing factors: none given")
    return out


def bearing_from_config(entry):
    """Factors from a config mapping: geometry (``n_balls``, ``ball_diameter``,
    ``pitch_diameter``, optional ``contact_angle``) or the factors themselves."""
    geometry = ("n_balls", "ball_diameter", "pitch_diameter", "contact_angle")
    if any(k in entry for k in geometry):
        extra = sorted(set(entry) - set(geometry))
        if extra:
            raise ValueError("bearing: give geometry or factors, not both (%s)" % ", ".join(extra))
        return bearing_factors(entry.get("n_balls"), entry.get("ball_diameter"),
                               entry.get("pitch_diameter"), entry.get("contact_angle", 0.0))
    return check_factors(entry)


def defect_frequencies(rpm, factors):
    """``{defect: Hz}`` at running speed ``rpm``."""
    if not rpm or rpm <= 0:
        raise ValueError("defect frequencies need rpm > 0, got %r" % (rpm,))
    fr = rpm / 60.0
    return {k: v * fr for k, v in factors.items()}


def bearing_tones(env_spec, rpm, factors, harmonics=3, tol=0.02):
    """Amplitudes in an envelope spectrum at each defect frequency and its
    harmonics: ``{defect: [(harmonic, frequency, rms), ...]}`` (harmonics
    beyond the spectrum left out).  ``tol`` as in
    :func:`~tsrmon.analytics.spectrum.amplitude_near` (slip moves the tones)."""
    out = {}
    for name, f in defect_frequencies(rpm, factors).items():
        rows = []
        for h in range(1, harmonics + 1):
            got = amplitude_near(env_spec, h * f, tol)
            if got is not None:
                rows.append((h, got[0], got[1]))
        out[name] = rows
    return out
