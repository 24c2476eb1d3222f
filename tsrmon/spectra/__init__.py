"""The spectra room (issue 17): per-minute spectra, envelopes and features
of sensors sampled at >= 1 kHz, and the sensor metadata catalog."""
