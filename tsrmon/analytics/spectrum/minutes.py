"""A sensor's spectra over time: one per minute from chunks as they arrive
(:class:`MinuteSpectra`), hourly averages (:func:`average`,
:class:`HourAverage`) and the decimated :func:`waterfall` for display.
Averages are over power, weighted by FFT blocks."""

import math

import numpy as np

from tsrmon.analytics.spectrum.welch import Spectrum, WelchSpectrum


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
