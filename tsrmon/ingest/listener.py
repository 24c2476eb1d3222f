"""The DAQ port as a service of the tree: listens, reports health and
counters, takes SIGHUP, and at stop drains what the kernel already delivered
before it closes every DAQ connection."""

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.cluster.proxy import proxied_factory
from tsrmon.ingest.admission import DAQFactory
from tsrmon.rooms import ICounters, IHealth, IReconfigurable


@implementer(IHealth, ICounters, IReconfigurable)
class DAQListenerService(service.Service):
    """Listens on the DAQ port; ``stopService`` drains and closes connections."""

    log = Logger()
    name = "daq"
    health_key = "daq"  # IHealth: its /healthz check
    counters_key = "ingest"  # ICounters: its /metrics prefix

    def __init__(self, config, hub, reactor, proxies=None):
        self.config = config
        self.hub = hub
        self.reactor = reactor
        # SERVER.TRUSTED_PROXIES as the daemon holds it (a SIGHUP reloads it).
        self.proxies = proxies
        self.factory = DAQFactory(config, hub, reactor)
        self.port = None
        self.listen_error = None
        self.listening = None

    def local_address(self):
        """(host, port) a local client dials to reach the listener (the demo
        DAQs), or None before it listens."""
        if self.port is None:
            return None
        host = self.port.getHost()
        wildcard = host.host in ("0.0.0.0", "::", "")
        return ("127.0.0.1" if wildcard else host.host, host.port)

    def endpoint_description(self):
        server = self.config.server
        if server.tcp_endpoint:
            return server.tcp_endpoint
        host = server.host.replace(":", "\\:")
        return f"tcp:port={server.tcp_port}:interface={host}"

    def startService(self):
        super().startService()
        description = self.endpoint_description()
        endpoint = endpoints.serverFromString(self.reactor, description)
        # SERVER.TRUSTED_PROXIES: the DAQ's own address from HAProxy's PROXY header.
        d = endpoint.listen(proxied_factory(self.factory, self.config, self.reactor, self.proxies))

        def listening(port):
            self.port = port
            self.log.info("DAQ feed listening on {address}", address=port.getHost())
            return port

        def failed(failure):
            # The top service reports it in one critical line and stops the
            # daemon (exit status 1): no traceback for a port in use.
            self.listen_error = failure.getErrorMessage()
            return failure

        d.addCallbacks(listening, failed)
        self.listening = d

    def reconfigure(self, config):
        self.config = config
        self.factory.reconfigure(config)

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            yield port.stopListening()
        conns = list(self.factory.connections)
        for conn in conns:
            conn.drain()
        for conn in conns:
            conn._close()
        if conns:
            waiting = self.factory.when_no_connections()
            timeout = self.reactor.callLater(5, self._abort_all)
            yield waiting
            if timeout.active():
                timeout.cancel()

    def _abort_all(self):
        for conn in list(self.factory.connections):
            self.log.warn("DAQ connection from {peer} did not close: aborting", peer=conn.peer)
            conn.transport.abortConnection()

    def healthy(self):
        return {
            "ok": self.port is not None and self.listen_error is None,
            "listening": str(self.port.getHost()) if self.port is not None else None,
            "error": self.listen_error,
            "connections": len(self.factory.connections),
        }

    health = healthy  # IHealth

    def counters(self):
        out = dict(self.factory.counters)
        # Frames, samples and drops are counted once, on the machines.
        out.update(self.hub.registry.totals())
        # Refusals decided by the hub (sensor names) are DAQ refusals too.
        out.update(getattr(self.hub, "counters", None) or {})
        out["open_connections"] = len(self.factory.connections)
        out["unnamed_now"] = sum(1 for c in self.factory.connections if c.machine is None)
        out["buffered_bytes_now"] = self.factory.buffered_total
        out["budget_paused_now"] = sum(1 for c in self.factory.connections if c.budget_paused is not None)
        out["paused_now"] = sum(1 for c in self.factory.connections if c.paused_at is not None)
        out["dropping_now"] = sum(1 for c in self.factory.connections if c.dropping)
        return out

    def connection_status(self):
        """Per-connection counters (REST and metrics)."""
        return [c.status() for c in self.factory.connections]
