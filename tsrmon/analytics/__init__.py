"""Vibration analytics: additive higher moments, spectra, envelopes, ISO 10816-3.

Pure numpy, no Twisted: the statistics, store, REST and live layers call
these functions (see docs/analytics.md, "Wiring").
"""
