"""Spectra: Hann-windowed rfft blocks, Welch averages, RMS-per-line lines.

Amplitude convention (docs/analytics.md): every spectrum here is an **RMS
amplitude per line with window energy correction**.  A bin's power is
``2 |X_k|² / (N Σw²)`` (``X = rfft(x·w)``, halved at DC and Nyquist), so the
bin powers sum to the mean square of the block (Parseval); a line's value is
the square root of the power of the bins it covers.  A sine of amplitude A
therefore shows ``A/√2`` at its line, and the RMS of any band is the root
sum of squares of its lines.

Blocks are ``N`` samples (default: the smallest power of two that is both
≥ 8,192 and ≥ 1 s of samples), taken with 50 % overlap; a minute's spectrum
is the mean of its block powers (Welch).  Lines: ``lines`` values (default
1,600) at ``k·Δf`` for ``k = 1..lines`` with ``Δf = fmax / lines`` and
``fmax = rate / 2.56`` (the analyser convention; the band above fmax is
where anti-alias filters roll off).  Line k covers ``[k·Δf - Δf/2,
k·Δf + Δf/2)``; bin power is spread uniformly over each bin's own width and
split between lines by overlap, so the total power is preserved whatever
the ratio of line to bin spacing (at 25.6 kHz with N = 32,768 a line is
exactly 8 bins).

No ``numpy.dot`` on the per-minute path: OpenBLAS threads it, and on a busy
2-core host one threaded 16k-element dot took milliseconds (see
bench/analytics.py); ``add.reduce`` of a product is single-threaded and
pairwise.
"""

import math

import numpy as np

G_MM_S2 = 9806.65          # 1 g in mm/s² (standard gravity)
MIN_BLOCK = 8192


def block_size(rate, mode="pow2"):
    """Samples per FFT block: ``pow2`` (default) the smallest power of two
    ≥ max(8,192, rate) — ≥ 1 s and an integer number of bins per line for
    1,600 lines; ``second``: one second of samples (round(rate))."""
    if not rate or rate <= 0:
        raise ValueError("block_size: rate must be > 0, got %r" % (rate,))
    if mode == "second":
        return max(int(round(rate)), 16)
    if mode != "pow2":
        raise ValueError("block_size: mode is 'pow2' or 'second', got %r" % (mode,))
    need = max(MIN_BLOCK, int(math.ceil(rate)))
    return 1 << (need - 1).bit_length()


def hann(n):
    """Periodic (DFT-even) Hann window, as spectral analysis uses."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float64)


class Spectrum:
    """An RMS-per-line amplitude spectrum: value ``i`` is at ``f0 + i·df`` Hz.

    ``rms``: amplitudes (RMS, in the signal's unit); ``blocks``: how many FFT
    blocks were averaged (the weight when averaging spectra); ``rate``: the
    sample rate it came from.  Lines spectra have ``f0 == df``; bin spectra
    (the fine Welch average) have ``f0 == 0``.
    """

    __slots__ = ("f0", "df", "rms", "blocks", "rate", "lobe")

    def __init__(self, f0, df, rms, blocks=1, rate=None, lobe=1):
        self.f0 = float(f0)
        # Half-width (in values) of the window's main lobe: a tone's energy
        # lies within ±lobe of its value (2 for Hann bins, 1 for lines).
        self.lobe = int(lobe)
        self.df = float(df)
        self.rms = np.asarray(rms)
        self.blocks = int(blocks)
        self.rate = rate

    @property
    def freqs(self):
        return self.f0 + self.df * np.arange(self.rms.size)

    @property
    def power(self):
        return np.square(self.rms, dtype=np.float64)

    @property
    def fmax(self):
        return self.f0 + self.df * (self.rms.size - 1)

    def total_rms(self):
        return float(math.sqrt(self.power.sum()))

    def __len__(self):
        return self.rms.size

    def __repr__(self):
        return "Spectrum(f0=%g, df=%g, n=%d, blocks=%d)" % (
            self.f0, self.df, self.rms.size, self.blocks)


def block_powers(blocks, window=None, wss=None):
    """One-sided, energy-corrected power per bin of each row of ``blocks``
    (shape ``(m, N)``): sums to each block's mean square of the windowed
    signal divided by the window's mean square."""
    blocks = np.atleast_2d(blocks)
    n = blocks.shape[-1]
    if window is None:
        window = hann(n)
    if wss is None:
        wss = float(np.dot(window, window))
    X = np.fft.rfft(blocks * window, axis=-1)
    p = X.real * X.real + X.imag * X.imag
    p *= 2.0 / (n * wss)
    p[:, 0] *= 0.5
    if n % 2 == 0:
        p[:, -1] *= 0.5
    return p


def to_lines(bin_power, bin_df, fmax, lines):
    """Power per bin (``bin_power[j]`` at ``j·bin_df``) → RMS per line.

    Each bin's power is uniform over ``[(j-½)·bin_df, (j+½)·bin_df)``; line k
    (1..lines) collects the part inside ``[(k-½)·Δf, (k+½)·Δf)`` with
    ``Δf = fmax/lines``.  Returns float64 RMS values, ``lines`` long.
    """
    p = np.asarray(bin_power, dtype=np.float64)
    dfl = fmax / lines
    # Cumulative power at bin edges (j - 1/2)·bin_df, j = 0..len.
    edges_f = (np.arange(p.size + 1) - 0.5) * bin_df
    cum = np.concatenate(([0.0], np.cumsum(p)))
    line_edges = (np.arange(lines + 1) + 0.5) * dfl
    c = np.interp(line_edges, edges_f, cum)
    return np.sqrt(np.maximum(np.diff(c), 0.0))


class WelchSpectrum:
    """Streaming Welch average: feed chunks of any length; blocks of ``n``
    samples with hop ``n/2`` are cut across chunk boundaries (carry-over)."""

    def __init__(self, rate, n=None, overlap=0.5, lines=1600, fmax=None):
        if not rate or rate <= 0:
            raise ValueError("spectrum needs a sample rate > 0, got %r" % (rate,))
        self.rate = float(rate)
        self.n = int(n) if n else block_size(rate)
        if not 0 <= overlap < 1:
            raise ValueError("overlap must be in [0, 1), got %r" % (overlap,))
        self.hop = max(1, int(round(self.n * (1 - overlap))))
        self.lines = int(lines)
        self.fmax = float(fmax) if fmax else self.rate / 2.56
        if self.fmax > self.rate / 2:
            raise ValueError("fmax %g Hz is above Nyquist (%g Hz)" % (self.fmax, self.rate / 2))
        self.window = hann(self.n)
        self.wss = float(np.dot(self.window, self.window))
        self._carry = np.empty(0)
        self._sum = np.zeros(self._nbins())
        self._blocks = 0
        self.samples = 0      # samples fed, ever

    def _nbins(self):
        return self.n // 2 + 1

    def _powers(self, blocks):
        """Power per bin of each block (rows); subclasses change the analysis."""
        return block_powers(blocks, self.window, self.wss)

    @property
    def bin_df(self):
        return self.rate / self.n

    def reset(self):
        """Drop carried samples (a gap in the data: never FFT across it)."""
        self._carry = np.empty(0)

    def feed(self, chunk):
        """Add samples; returns how many new blocks were completed."""
        x = np.asarray(chunk, dtype=np.float64).ravel()
        # One cheap pass (a sum) keeps a NaN/inf from poisoning the average.
        if x.size and not math.isfinite(float(np.add.reduce(x))):
            raise ValueError("spectrum: non-finite samples in a chunk of %d "
                             "(chunk refused, average unchanged)" % x.size)
        self.samples += x.size
        buf = np.concatenate((self._carry, x)) if self._carry.size else x
        if buf.size < self.n:
            self._carry = buf.copy() if buf is x else buf
            return 0
        m = (buf.size - self.n) // self.hop + 1
        view = np.lib.stride_tricks.sliding_window_view(buf, self.n)[::self.hop][:m]
        # Bounded memory per call: at most 16 blocks in one rfft.
        for i in range(0, m, 16):
            self._sum += self._powers(view[i:i + 16]).sum(axis=0)
        self._blocks += m
        self._carry = buf[m * self.hop:].copy()
        return m

    @property
    def blocks(self):
        return self._blocks

    def take_fine(self):
        """The Welch average at bin resolution (float64, f0 = 0) and reset the
        average (carried samples stay: the next block overlaps); None when no
        block completed."""
        if not self._blocks:
            return None
        p = self._sum / self._blocks
        out = Spectrum(0.0, self.bin_df, np.sqrt(p), self._blocks, self.rate, lobe=2)
        self._sum = np.zeros_like(self._sum)
        self._blocks = 0
        return out

    def take(self):
        """``(lines, fine)``: the float32 line spectrum and the bin spectrum
        of the blocks completed since the last take; ``(None, None)`` if none."""
        fine = self.take_fine()
        if fine is None:
            return None, None
        return lines_of(fine, self.fmax, self.lines), fine


def lines_of(fine, fmax, lines):
    """Line spectrum (float32) of a bin spectrum (f0 = 0)."""
    dfl = fmax / lines
    vals = to_lines(fine.power, fine.df, fmax, lines).astype(np.float32)
    lobe = max(1, int(math.ceil(fine.lobe * fine.df / dfl)))
    return Spectrum(dfl, dfl, vals, fine.blocks, fine.rate, lobe)


def spectrum_of(x, rate, n=None, lines=1600, fmax=None, overlap=0.5):
    """One-shot Welch spectrum of an array: ``(lines, fine)``."""
    w = WelchSpectrum(rate, n=n, overlap=overlap, lines=lines, fmax=fmax)
    w.feed(x)
    return w.take()


class MinuteResult:
    __slots__ = ("minute", "lines", "fine")

    def __init__(self, minute, lines, fine):
        self.minute = minute
        self.lines = lines
        self.fine = fine

    def __repr__(self):
        return "MinuteResult(minute=%r, %r)" % (self.minute, self.lines)


class MinuteSpectra:
    """Per-sensor accumulator: chunks as they arrive → one spectrum per minute.

    ``add(t, chunk)`` takes the time of the chunk's first sample (epoch s)
    and returns the :class:`MinuteResult` of every minute that this chunk
    closed.  A block belongs to the minute in which its last sample falls
    (blocks straddling a boundary count in the new minute).  Samples are
    assumed contiguous unless the chunk starts more than ``max_gap`` seconds
    after the previous one ended (or before it, by more than ``max_gap``):
    then the carry is dropped, never FFT across a gap, and if the chunk
    starts in another minute the current one is closed first.  Arrival-time
    jitter below ``max_gap`` is ignored: sample counting keeps the block
    clock.  After a jump back (late data) and forth, one minute can be
    returned twice: its results merge with :func:`average` (weighted by
    blocks), as a store upsert would.

    ``follow_early=True`` (the daemon's live feed): a chunk that starts more
    than ``max_gap`` *before* the sample clock (a sender faster than real
    time, such as a benchmark) is contiguous, and the clock follows its
    time; only a chunk later than ``max_gap`` is a gap.  ``welch`` replaces
    the analysis (an ``EnvelopeSpectrum``; then a result's ``lines`` is the
    envelope spectrum and ``fine`` is None).
    """

    def __init__(self, rate, minute=60, max_gap=2.0, follow_early=False, welch=None, **kw):
        self.welch = welch if welch is not None else WelchSpectrum(rate, **kw)
        self.follow_early = bool(follow_early)
        self.minute = int(minute)
        self.max_gap = float(max_gap)
        self._current = None      # minute start of blocks in self.welch
        self._t_next = None       # expected time of the next sample

    def _close(self, out):
        got = self.welch.take()
        lines, fine = got if isinstance(got, tuple) else (got, None)
        if lines is not None:
            out.append(MinuteResult(self._current, lines, fine))

    def add(self, t, chunk):
        x = np.asarray(chunk, dtype=np.float64).ravel()
        if x.size and not math.isfinite(float(np.add.reduce(x))):
            # Refused whole; the hole it leaves is a gap: never FFT across it.
            self.welch.reset()
            self._t_next = None
            raise ValueError("spectrum: non-finite samples in a chunk of %d (refused)" % x.size)
        rate, span = self.welch.rate, self.minute
        out = []
        if self.follow_early and self._t_next is not None and t < self._t_next - self.max_gap:
            # Faster than real time: contiguous samples, the clock follows
            # arrival (the current minute never moves back: see the max() below).
            t0 = t
        elif self._t_next is not None and abs(t - self._t_next) > self.max_gap:
            self.welch.reset()
            t0 = t
            # A jump to another minute (late data from a DAQ's offline
            # buffer, or back to live) closes the current one first, so
            # each block lands in the minute of its own samples.
            if self._current is not None and math.floor(t / span) * span != self._current:
                self._close(out)
                self._current = None
        else:
            t0 = t if self._t_next is None else self._t_next
        pos = 0
        while pos < x.size:
            if self._current is None:
                self._current = math.floor((t0 + pos / rate) / span) * span
            # First index whose time t0 + i/rate is at or past the boundary.
            cut = int(math.ceil((self._current + span - t0) * rate - 1e-9))
            if cut >= x.size:
                self.welch.feed(x[pos:])
                break
            if cut > pos:
                self.welch.feed(x[pos:cut])
                pos = cut
            self._close(out)
            # pos is at or past the boundary (max() guards float rounding).
            self._current = max(math.floor((t0 + pos / rate) / span) * span,
                                self._current + span)
        self._t_next = t0 + x.size / rate
        return out

    def flush(self):
        """Close the current minute (stopService); returns its result or None."""
        out = []
        if self._current is not None:
            self._close(out)
        return out[0] if out else None


def average(spectra):
    """Power average of spectra on the same lines, weighted by block count
    (the hourly spectrum from its minutes).  float32 like its inputs."""
    spectra = [s for s in spectra if s is not None and s.blocks]
    if not spectra:
        return None
    first = spectra[0]
    total = np.zeros(first.rms.size)
    blocks = 0
    for s in spectra:
        if s.rms.size != first.rms.size or s.df != first.df or s.f0 != first.f0:
            raise ValueError("average: spectra on different lines (%r vs %r)" % (s, first))
        total += s.blocks * s.power
        blocks += s.blocks
    return Spectrum(first.f0, first.df, np.sqrt(total / blocks).astype(first.rms.dtype),
                    blocks, first.rate, first.lobe)


class HourAverage:
    """Running hourly average of minute spectra: ``add(spectrum)``, ``take()``."""

    def __init__(self):
        self._sum = None
        self._blocks = 0
        self._like = None

    def add(self, spec):
        if spec is None or not spec.blocks:
            return
        if self._sum is None:
            self._sum = np.zeros(spec.rms.size)
            self._like = spec
        elif spec.rms.size != self._like.rms.size or spec.df != self._like.df:
            raise ValueError("HourAverage: spectrum on different lines")
        self._sum += spec.blocks * spec.power
        self._blocks += spec.blocks

    def take(self):
        if self._sum is None:
            return None
        s = self._like
        out = Spectrum(s.f0, s.df, np.sqrt(self._sum / self._blocks).astype(s.rms.dtype),
                       self._blocks, s.rate, s.lobe)
        self._sum, self._blocks, self._like = None, 0, None
        return out


# -- features ------------------------------------------------------------------

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


# -- storage and waterfall ---------------------------------------------------------

def pack(spec):
    """The stored form of a line spectrum's values: float32 little-endian bytes."""
    return np.asarray(spec.rms, dtype="<f4").tobytes()


def unpack(blob, f0, df, blocks=1, rate=None, lobe=1):
    """Inverse of :func:`pack` (the other fields come from the row's columns)."""
    if len(blob) % 4:
        raise ValueError("spectrum blob of %d bytes is not float32 values" % len(blob))
    return Spectrum(f0, df, np.frombuffer(blob, dtype="<f4").astype(np.float32),
                    blocks, rate, lobe)


def waterfall(spectra, rows=None, lines=None):
    """Decimate a time series of spectra on the same lines for display.

    Consecutive spectra are grouped into at most ``rows`` rows, averaged
    over power and weighted by blocks (each row is the Welch spectrum of its
    time span). Adjacent lines are grouped into at most ``lines`` columns,
    summing power (each column is the RMS of its band). Returns
    ``(groups, f0, df, rms)``: ``groups`` lists, for each output row, the
    indices of the input spectra that it merges. The column centres are
    ``f0 + i·df``, and ``rms`` is a float32 array of shape (rows, columns).
    """
    spectra = list(spectra)
    if not spectra:
        return [], 0.0, 0.0, np.zeros((0, 0), np.float32)
    first = spectra[0]
    n_lines = first.rms.size
    for s in spectra:
        if s.rms.size != n_lines or s.df != first.df or s.f0 != first.f0:
            raise ValueError("waterfall: spectra on different lines (%r vs %r)" % (s, first))
    if rows is not None and rows < 1 or lines is not None and lines < 1:
        raise ValueError("waterfall: rows and lines must be >= 1")
    rf = -(-len(spectra) // rows) if rows else 1
    lf = -(-n_lines // lines) if lines else 1
    groups = [list(range(i, min(i + rf, len(spectra)))) for i in range(0, len(spectra), rf)]
    out_cols = -(-n_lines // lf)
    out = np.zeros((len(groups), out_cols))
    pad = out_cols * lf - n_lines
    for r, g in enumerate(groups):
        w = np.array([max(spectra[i].blocks, 1) for i in g], dtype=np.float64)
        p = sum(wi * spectra[i].power for wi, i in zip(w, g)) / w.sum()
        if pad:
            p = np.concatenate((p, np.zeros(pad)))
        out[r] = p.reshape(out_cols, lf).sum(axis=1)
    # Column i merges lines i·lf .. i·lf+lf-1; its centre is their middle.
    f0 = first.f0 + (lf - 1) / 2 * first.df
    return groups, f0, lf * first.df, np.sqrt(out).astype(np.float32)
