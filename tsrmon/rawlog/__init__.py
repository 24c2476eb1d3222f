"""The raw CSV log: every sample of every sensor as a row of a daily file.

``service.py`` (the hub's ``RawSink``: buffering, flushing, backpressure),
``buffers.py`` (samples as flat float64 columns), ``rows.py`` (formatting),
``files.py`` (open files, appends, gzip, retention), ``worker.py`` (the
files in a worker process), ``health.py`` (counters, /healthz, degraded
files), ``maintenance.py`` (free space, gzip and retention runs).
"""
