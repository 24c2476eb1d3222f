"""Computing spectra: Hann-windowed rfft blocks, Welch averages, RMS-per-line lines,
and their stored form (pack/unpack).

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


class Window:
    """A read-only Hann window of ``n`` points with its sum of squares
    (``wss``, the energy correction) and its sum (``wsum``)."""

    __slots__ = ("n", "w", "wss", "wsum")

    def __init__(self, n):
        w = hann(n)
        w.flags.writeable = False   # shared between analysers and threads
        self.n = int(n)
        self.w = w
        self.wss = float(np.add.reduce(w * w))
        self.wsum = float(np.add.reduce(w))


class Windows:
    """Hann windows by length, each built once and shared read-only.

    A new sensor's analysers need windows of the block size (and the
    envelope's decimated size): about 1 ms of CPU per 32,768 points each,
    times three analysers, on the thread that builds them (the reactor, in
    the spectra room).  The room holds one ``Windows`` and passes it down,
    so 64 new sensors cost one window per size, not 192.  A plain dict:
    two threads asking for a new size at once at worst both build it."""

    def __init__(self):
        self._by_n = {}

    def get(self, n):
        n = int(n)
        got = self._by_n.get(n)
        if got is None:
            got = self._by_n[n] = Window(n)
        return got

    def __len__(self):
        return len(self._by_n)


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

    def __init__(self, rate, n=None, overlap=0.5, lines=1600, fmax=None, windows=None):
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
        # ``windows``: a shared :class:`Windows` (the spectra room's); else
        # this analyser's own.
        self.windows = windows if windows is not None else Windows()
        win = self.windows.get(self.n)
        self.window = win.w
        self.wss = win.wss
        self._carry = np.empty(0)
        # Allocated at the first block (on the spectra worker, not on the
        # reactor that builds a new sensor's analysers).
        self._sum = None
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
        if self._sum is None:
            self._sum = np.zeros(self._nbins())
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
        self._sum = None
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


def pack(spec):
    """The stored form of a line spectrum's values: float32 little-endian bytes."""
    return np.asarray(spec.rms, dtype="<f4").tobytes()


def unpack(blob, f0, df, blocks=1, rate=None, lobe=1):
    """Inverse of :func:`pack` (the other fields come from the row's columns)."""
    if len(blob) % 4:
        raise ValueError("spectrum blob of %d bytes is not float32 values" % len(blob))
    return Spectrum(f0, df, np.frombuffer(blob, dtype="<f4").astype(np.float32),
                    blocks, rate, lobe)
