"""A SIGTERM that lands after the first port opened but before reactor.run()
(a supervisor that saw the port) is a clean stop too: tsrmon's handler is in
place before any listener, and it stops the reactor as soon as it runs."""

import os
import signal

from tsrmon.config import build_config
from tsrmon.service import TsrmonService


class NotYetRunning:
    """The reactor between startService and run(): queues, runs nothing."""

    running = False

    def __init__(self):
        self.when_running = []
        self.from_thread = []
        self.stopped = False

    def callWhenRunning(self, f, *a):
        self.when_running.append((f, a))

    def callFromThread(self, f, *a):
        self.from_thread.append((f, a))

    def stop(self):
        self.stopped = True

    def seconds(self):
        return 0.0

    def callLater(self, *a, **kw):
        return Timer()


class Timer:
    def cancel(self):
        pass

    def active(self):
        return True


def test_sigterm_before_reactor_run_stops_cleanly_once_it_runs(tmp_path):
    config = build_config({}, None, str(tmp_path))
    reactor = NotYetRunning()
    top = TsrmonService(config, reactor)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        top.startService()
        assert signal.getsignal(signal.SIGTERM) == top._sigterm
        os.kill(os.getpid(), signal.SIGTERM)  # handled: the test process lives on
        (f, args), = reactor.from_thread
        f(*args)  # what the reactor does with callFromThread once it runs
        assert not reactor.stopped
        (g, gargs), = [c for c in reactor.when_running if c[0] == reactor.stop]
        reactor.running = True
        g(*gargs)
        assert reactor.stopped
    finally:
        signal.signal(signal.SIGTERM, previous)
