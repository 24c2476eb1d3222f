"""One sensor's spectra accumulators: the minute line spectrum (Welch, 50 %
overlap) and, with ``SPECTRA.ENVELOPE``, the envelope spectrum, paired per
minute.  Fed on the spectra room's worker thread (or the reactor with
``SPECTRA.THREAD: false``); ``queue``/``scheduled``/``lock`` are the room's
hand-off to the worker."""

import collections
import threading

from tsrmon.analytics.envelope import EnvelopeSpectrum
from tsrmon.analytics.spectrum import MinuteSpectra, block_size


class SensorSpectra:
    """One sensor's accumulators (one live and one late stream each)."""

    def __init__(self, meta, cfg, follow_early, windows=None):
        self.meta = meta
        self.rate = meta.rate
        self.band = meta.envelope_band
        mode = cfg.block
        n = block_size(self.rate, mode)
        # ``windows``: the room's shared Hann windows (built once per size).
        self.spectrum = MinuteSpectra(self.rate, follow_early=follow_early, n=n,
                                      lines=cfg.lines, windows=windows)
        self.envelope = None
        if cfg.envelope:
            fmax = min(float(cfg.envelope_fmax), self.rate / 2.56)
            # No overlap for the envelope (the spectrum keeps its 50 %): the
            # envelope is the costly analysis, and bearing tones only need
            # the average, not the overlap's variance reduction.
            env = EnvelopeSpectrum(self.rate, band=meta.envelope_band, env_fmax=fmax, n=n,
                                   overlap=0.0, windows=windows)
            self.envelope = MinuteSpectra(self.rate, follow_early=follow_early, welch=env)
        self.envelopes = {}   # minute -> envelope spectrum not yet paired
        self.follow_early = follow_early
        self.max_gap = self.spectrum.max_gap
        # Threaded mode: chunks waiting for the worker ((t, x), or None for a
        # hole left by a dropped chunk) and whether a drain job is queued.
        self.queue = collections.deque()
        self.scheduled = False
        self.lock = threading.Lock()

    def gap(self):
        """A hole in the data (a chunk dropped): no block spans it; the open
        minute keeps its blocks."""
        for ms in (self.spectrum, self.envelope):
            if ms is not None:
                ms.welch.reset()
                ms._t_next = None

    def add(self, t, x):
        """Feed a chunk (worker thread); ``[(minute, lines, fine, envelope)]``."""
        if self.envelope is not None:
            for r in self.envelope.add(t, x):
                self.envelopes[r.minute] = r.lines
        return [(r.minute, r.lines, r.fine, self.envelopes.pop(r.minute, None))
                for r in self.spectrum.add(t, x)]

    def flush(self):
        if self.envelope is not None:
            r = self.envelope.flush()
            if r is not None:
                self.envelopes[r.minute] = r.lines
        r = self.spectrum.flush()
        out = [] if r is None else [(r.minute, r.lines, r.fine, self.envelopes.pop(r.minute, None))]
        self.envelopes.clear()
        return out
