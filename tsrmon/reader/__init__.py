"""The read room: served statistics, anomalies, faults, spectra for REST and live."""
