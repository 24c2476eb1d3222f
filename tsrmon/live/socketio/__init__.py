"""Socket.IO v5 over :mod:`tsrmon.live.engineio`: namespaces, events, acks, binary.

Like :mod:`tsrmon.live.engineio`, a small library that imports nothing from
the rest of tsrmon (tests/live/test_library_imports.py checks); tsrmon's
namespaces (:mod:`tsrmon.live.machines`) sit on top of it.

- :mod:`.packets` — the Socket.IO packet codec
- :mod:`.namespace` — :class:`Namespace` (subclass it), :class:`NamespaceSocket`, :class:`ConnectRefused`
- :mod:`.server` — :class:`SocketConnection`, :class:`SocketServer`

:class:`SocketServer` is the Engine.IO handler factory.  Each engine session
gets a :class:`SocketConnection` that multiplexes namespace sockets
(:class:`NamespaceSocket`).  What a namespace does is a :class:`Namespace`
subclass, found by the server's ``resolve(nsp)`` callable; an unknown
namespace gets ``CONNECT_ERROR {"message": "Invalid namespace"}``.  With the
owner's ``policy`` requiring tokens (``tokens_required``, ``token_ok``: see
:mod:`tsrmon.live.engineio`), a CONNECT needs a valid handshake token or
``auth: {"token": …}``; :meth:`SocketServer.revalidate` disconnects what the
policy no longer accepts.  ``peerlog`` as for the engine.
"""

from tsrmon.live.socketio import packets
from tsrmon.live.socketio.namespace import (
    RESERVED_EVENTS, ConnectRefused, Namespace, NamespaceSocket)
from tsrmon.live.socketio.server import SocketConnection, SocketServer

__all__ = ["RESERVED_EVENTS", "ConnectRefused", "Namespace", "NamespaceSocket",
           "SocketConnection", "SocketServer", "packets"]
