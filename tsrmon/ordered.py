"""``OrderedMultiService``: a service tree that stops one child at a time.

``twisted.application.service.MultiService`` stops its children all at once.
tsrmon needs them stopped one after the other, in reverse start order: the
DAQ listener stops and drains before statistics flush, and statistics flush
before the store closes, so a SIGTERM loses nothing.  (Buildbot's
``AsyncMultiService`` does the same; ``TsrmonService`` also awaits each
child's start before the next.)
"""

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger


class OrderedMultiService(service.MultiService):
    log = Logger()

    def __init__(self, clock=None, stop_timeout=None):
        super().__init__()
        self.clock = clock
        self.stop_timeout = stop_timeout

    def stopService(self):
        service.Service.stopService(self)
        return defer.ensureDeferred(self._stop_children())

    async def _stop_children(self):
        for child in reversed(list(self)):
            if not child.running:
                continue
            name = getattr(child, "name", None) or type(child).__name__
            try:
                d = defer.maybeDeferred(child.stopService)
                if self.clock is not None and self.stop_timeout:
                    d.addTimeout(self.stop_timeout, self.clock)
                await d
            except Exception:
                # Logged with context; the remaining children still stop.
                self.log.failure("stopping {service} failed", service=name)
