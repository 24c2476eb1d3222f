"""Spectra, RMS amplitude per line (the convention is in :mod:`.welch`).

``welch``: computing a spectrum (blocks, Hann window, Welch average, lines)
and its stored form; ``minutes``: a sensor's spectra over time (per minute,
hourly averages, waterfall); ``readings``: figures read off a spectrum
(bands, velocity RMS, tones, peaks, orders).  ``tsrmon.analytics.spectrum``
offers all of them under one name, as callers have always used it.
"""

from tsrmon.analytics.spectrum.minutes import HourAverage, MinuteResult, MinuteSpectra, average, waterfall
from tsrmon.analytics.spectrum.readings import (G_MM_S2, amplitude_near, band_rms, bands_rms, orders, peaks,
                                                tone_rms, velocity_rms)
from tsrmon.analytics.spectrum.welch import (MIN_BLOCK, Spectrum, WelchSpectrum, block_powers, block_size, hann,
                                             lines_of, pack, spectrum_of, to_lines, unpack, Window, Windows)

__all__ = [
    "HourAverage", "MinuteResult", "MinuteSpectra", "average", "waterfall",
    "G_MM_S2", "amplitude_near", "band_rms", "bands_rms", "orders", "peaks", "tone_rms", "velocity_rms",
    "MIN_BLOCK", "Spectrum", "WelchSpectrum", "block_powers", "block_size", "hann", "lines_of", "pack",
    "spectrum_of", "to_lines", "unpack", "Window", "Windows",
]
