"""Socket.IO namespaces: what a namespace does (:class:`Namespace`) and one
client's socket on it (:class:`NamespaceSocket`)."""

from twisted.logger import Logger

from tsrmon.live.engineio import Outgoing, new_sid
from tsrmon.live.socketio import packets as P

# Reserved names the JS client never emits; Dart 2.x sent them anyway, so
# they are ignored rather than treated as protocol errors.
RESERVED_EVENTS = frozenset(("connect", "connect_error", "disconnect", "disconnecting",
                             "newListener", "removeListener"))


class ConnectRefused(Exception):
    """Raised by :meth:`Namespace.authorize` to refuse a CONNECT."""

    def __init__(self, message, data=None):
        super().__init__(message)
        self.message = message
        self.data = data


class Namespace:
    """The behaviour of one namespace; ``sockets`` maps Socket.IO sid → socket."""

    log = Logger()

    def __init__(self, name):
        self.name = name
        self.sockets = {}

    def authorize(self, connection, auth):
        """Raise :class:`ConnectRefused` to refuse; the default accepts."""

    def on_connect(self, socket, auth):
        pass

    def on_event(self, socket, event, args, ack):
        """``ack`` is None or a callable taking the ack arguments."""

    def on_disconnect(self, socket, reason):
        pass

    def broadcast(self, event, *args):
        """Send one event to every socket, serialised once; returns the count sent."""
        if not self.sockets:
            return 0
        return self.send_to(list(self.sockets.values()), event, *args)

    def send_to(self, sockets, event, *args):
        """Send one event to some sockets of this namespace, serialised once."""
        return self.send_all_to(sockets, [(event, *args)])

    def broadcast_all(self, events):
        """Send events (``[(event, *args)]``, in order) to every socket: each
        serialised once, handed to each client in one call (so a client costs
        the same however many events there are).  Returns events × clients sent."""
        if not self.sockets or not events:
            return 0
        return self.send_all_to(list(self.sockets.values()), events) * len(events)

    def send_all_to(self, sockets, events):
        """Send events to some sockets; returns how many sockets took them."""
        shared = []
        for event in events:
            items = P.encode(P.EVENT, self.name, list(event))
            shared.append(Outgoing("4" + items[0]))
            shared.extend(items[1:])
        sent = 0
        for socket in list(sockets):
            if socket.connection.session.send_many(shared):
                sent += 1
        return sent


class NamespaceSocket:
    """One client in one namespace."""

    __slots__ = ("sid", "namespace", "connection", "acks", "next_ack", "state", "token")

    def __init__(self, namespace, connection):
        if connection.v4_protocol:
            # Socket.IO v4 (EIO3 clients): the socket id is "<nsp>#<engine sid>".
            sid = connection.session.sid
            self.sid = sid if namespace.name == "/" else f"{namespace.name}#{sid}"
        else:
            self.sid = new_sid()
        self.namespace = namespace
        self.connection = connection
        self.acks = {}
        self.next_ack = 0
        self.state = {}  # per-socket data of the namespace behaviour
        self.token = None  # the API token that let it in (rechecked on SIGHUP)

    @property
    def nsp(self):
        return self.namespace.name

    def emit(self, event, *args, callback=None):
        ack_id = None
        if callback is not None:
            ack_id = self.next_ack
            self.next_ack += 1
            self.acks[ack_id] = callback
        return self.connection.send_packet(P.EVENT, self.nsp, [event, *args], ack_id)

    def disconnect(self):
        """Server-side disconnect of this namespace only."""
        if self.connection.sockets.get(self.nsp) is self:
            self.connection.send_packet(P.DISCONNECT, self.nsp)
            self.connection.leave(self, "server namespace disconnect")
