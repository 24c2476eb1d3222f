"""Listeners of the service tree: an endpoint listener that keeps its failure
for one log line, and the check that a listening socket still accepts.

``TsrmonService`` (``service.py``) treats every listener as all or nothing:
one that cannot listen ends start-up, one that stops accepting stops the
daemon (docs/architecture.md).
"""

import os
import socket

from twisted.application import internet, service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger


class EndpointListener(internet.StreamServerEndpointService):
    """Listens on an endpoint description, as ``StreamServerEndpointService``
    (in ``privilegedStartService``), but keeps a failure instead of logging a
    traceback: ``TsrmonService`` reports it in one line and stops.  Like the
    DAQ listener it offers ``listening`` (a Deferred firing with the port,
    or None on failure), ``port``, ``listen_error`` and
    ``endpoint_description()``.  The endpoint is built when listening, so a
    ``systemd:`` description without its inherited socket is such a failure
    too, not a traceback while the service tree is built.
    """

    log = Logger()

    def __init__(self, reactor, description, factory, name, label=None):
        super().__init__(None, factory)
        self.reactor = reactor
        self.description = description
        self.setName(name)
        self.label = label or name
        self.port = None
        self.listen_error = None
        self.listening = None

    def endpoint_description(self):
        return self.description

    def privilegedStartService(self):
        service.Service.privilegedStartService(self)
        try:
            self.endpoint = serverFromString(self.reactor, self.description)
            d = self.endpoint.listen(self.factory)
        except Exception as e:
            d = defer.fail(OSError(listen_exception_text(self.description, e)))

        def listening(port):
            self.port = port
            self.log.info("{label} listening on {address}", label=self.label, address=port.getHost())
            return port

        def failed(failure):
            self.listen_error = failure.getErrorMessage()
            return None

        d.addCallbacks(listening, failed)
        # StreamServerEndpointService.stopService stops the port through this.
        self._waitingForPort = self.listening = d


def listen_exception_text(description, error):
    """One line for an endpoint that could not even be built."""
    if description.startswith("systemd:") and isinstance(error, (IndexError, KeyError)):
        # Twisted's parser looks the socket up in LISTEN_FDS / LISTEN_FDNAMES.
        return (f"systemd passed no such socket (LISTEN_FDS={os.environ.get('LISTEN_FDS', '')!r}, "
                f"LISTEN_FDNAMES={os.environ.get('LISTEN_FDNAMES', '')!r}); start tsrmon through "
                f"tsrmon.socket, or listen on SERVER.HOST/PORT/TCP_PORT instead")
    return str(error) or type(error).__name__


def address_text(address):
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(getattr(address, "name", None) or address)


def listener_problem(port):
    """Why a listening port no longer accepts connections, or None.

    Twisted logs an unexpected ``accept()`` error and keeps the port
    registered, so a listener whose socket broke (shut down, closed under
    it) would sit there refusing every client while the daemon looks alive.
    """
    if getattr(port, "connected", True) is False:
        return "the listening socket was closed"
    sock = getattr(port, "socket", None)
    if not isinstance(sock, socket.socket):
        return None
    try:
        accepting = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError as e:
        return f"the listening socket failed ({e.strerror or e})"
    if not accepting:
        return "the socket no longer listens (shut down)"
    return None
