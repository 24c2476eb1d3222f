"""Conformance fixture: ``python -m tsrmon.live.conformance --port 3000``.

Serves exactly what the official engine.io-protocol and socket.io-protocol
test suites expect (docs/socketio.md): a bare Engine.IO echo endpoint at
``/engine.io/`` and Socket.IO at ``/socket.io/`` with namespaces ``/`` and
``/custom``; pingInterval 300 ms, pingTimeout 200 ms, connectTimeout 1 s.
The project's own tests build the same site on a free port with a
``task.Clock`` (:func:`build_site`).
"""

import argparse
import sys

from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Site

from tsrmon.live.engineio import EngineServer
from tsrmon.live.socketio import Namespace, SocketServer


class EchoHandler:
    """engine.io suite: every message goes back unchanged, text or binary."""

    def __init__(self, session):
        self.session = session

    def on_message(self, data):
        self.session.send("4" + data if isinstance(data, str) else data)

    def on_close(self, reason):
        pass


class EchoNamespace(Namespace):
    """socket.io suite: ``auth`` on connect, ``message-back``, ``message-with-ack``."""

    def on_connect(self, socket, auth):
        socket.emit("auth", auth)

    def on_event(self, socket, event, args, ack):
        if event == "message":
            socket.emit("message-back", *args)
        elif event == "message-with-ack" and ack is not None:
            ack(*args)


def build_site(clock, ping_interval=0.3, ping_timeout=0.2, connect_timeout=1.0,
               max_payload=1_000_000, upgrade_timeout=10.0, max_queue=1000, allow_eio3=False):
    """The fixture's resource tree and its two engines."""
    namespaces = {"/": EchoNamespace("/"), "/custom": EchoNamespace("/custom")}
    options = dict(ping_interval=ping_interval, ping_timeout=ping_timeout,
                   max_payload=max_payload, upgrade_timeout=upgrade_timeout,
                   max_queue=max_queue, allow_eio3=allow_eio3)  # default policy: CORS *, no tokens
    echo = EngineServer(clock, EchoHandler, name="engine.io", **options)
    sio = SocketServer(clock, namespaces.get, connect_timeout=connect_timeout)
    socketio = EngineServer(clock, sio, name="socket.io", **options)
    root = Resource()
    root.putChild(b"engine.io", echo.resource())
    root.putChild(b"socket.io", socketio.resource())
    return root, echo, socketio


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tsrmon.live.conformance",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--eio3", action="store_true",
                        help="also accept Engine.IO v3 (for the suite's v3 branch)")
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    root, _, _ = build_site(reactor, allow_eio3=args.eio3)
    port = reactor.listenTCP(args.port, Site(root), interface=args.host)
    Logger().info("conformance fixture on http://{host}:{port}/",
                  host=args.host, port=port.getHost().port)
    reactor.run()


if __name__ == "__main__":
    main()
