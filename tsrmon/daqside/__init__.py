"""The DAQ side: what runs on a DAQ PC, or pretends to be one.

``wire`` (the frames a DAQ writes) and ``client`` (a blocking DAQ client)
need the standard library only, so a DAQ PC can run them next to NI-DAQmx
without Twisted; ``tsrmon.client`` is their public name.  ``waveforms``
(numpy), ``simulator`` and ``demo`` (Twisted) are the simulated DAQs of
``tsrmon simulate`` and the daemon's ``--demo``.  Nothing here imports the
server's rooms, and this package imports none of its modules itself.
"""
