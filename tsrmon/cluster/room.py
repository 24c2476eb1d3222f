"""The cluster room as one child of the service tree: the bus, the leases and
the lease gate, built only when CLUSTER.REDIS is set (:func:`build`).

Wiring (``tsrmon.service.makeService``), each a line or two:

- ``cluster = build(config, reactor, registry, bus)`` right after the live
  bus (``LiveBus``) exists: it attaches the cluster bus to it, so every live
  event is published, and other nodes' events go to every live layer;
- the notifier takes ``throttle=cluster.throttle(reactor)`` (cluster-wide
  spacing and cap);
- the hub takes ``lease=cluster.gate`` (one owner per machine);
- the REST ``/machines`` route merges :meth:`ClusterRoom.with_cluster`;
- the room goes into the tree before the hub, so it starts before the DAQ
  listener and stops after it.
"""

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.ordered import OrderedMultiService
from tsrmon.rooms import IReconfigurable


class LeaseGate:
    """What the hub calls at a DAQ's claim and release (``hub.lease``).

    A claim the registry accepted is confirmed with the lease; when another
    node keeps the machine the connection is closed (one line) and the
    machine goes offline here as after a disconnect.  ``live_bus``: where
    the status change goes (the hub's ``LiveBus``)."""

    log = Logger()

    def __init__(self, registry, live_bus):
        self.registry = registry
        self.live_bus = live_bus
        self.leases = self.bus = None  # set by ClusterRoom (they refer to each other)
        self.refused = 0

    def claimed(self, machine, connection):
        """The registry bound ``connection`` to ``machine``: a Deferred(bool)."""
        d = self.leases.acquire(machine.name, connection.peer_host or "")

        def decided(ok):
            if machine.connection is not connection:
                return ok  # gone meanwhile
            if ok:
                self.bus.machine_status(machine)  # now announced to the other nodes
            else:
                self.refused += 1
                self._close(machine, connection, "the machine is fed through another node")
            return ok
        return d.addCallback(decided)

    def released(self, machine, connection):
        """``connection`` of ``machine`` ended (called by the hub)."""
        if machine is not None and machine.connection is None and self.leases.holds(machine.name):
            return self.leases.release(machine.name)
        return defer.succeed(False)

    def lost(self, name):
        """Leases.on_lost: another node owns ``name`` now."""
        machine = self.registry.get(name)
        if machine is not None and machine.connection is not None:
            self._close(machine, machine.connection, "its lease went to another node")

    def takeover(self, name, peer):
        """Leases.on_takeover: the same DAQ reconnected through another node."""
        machine = self.registry.get(name)
        if machine is not None and machine.connection is not None and machine.connection.peer_host == peer:
            self._close(machine, machine.connection, "it reconnected through another node")

    def _close(self, machine, connection, why):
        self.log.warn("cluster: {machine} from {peer} closed here: {why}", machine=machine.name,
                      peer=connection.peer_host, why=why)
        if self.registry.release(machine, connection):
            self.live_bus.machine_status(machine)
        # Another node feeds it (each reason says so): its DAQ-silence is not
        # this node's to judge from the frames it took meanwhile.
        machine.fed_elsewhere = machine.fed_elsewhere or "another node"
        connection.takeover(why)  # closes quietly, as after a local takeover


@implementer(IReconfigurable)
class ClusterRoom(OrderedMultiService):
    """The bus and the leases of this node (children, in that order)."""

    log = Logger()
    name = "cluster_room"

    def __init__(self, config, reactor, registry, live_bus, prefix=None):
        # Imported here: txredisapi comes with the 'cluster' extra, and a
        # single node (no CLUSTER.REDIS) must start without it.
        from tsrmon.cluster.bus import ClusterBus, LiveDelivery
        from tsrmon.cluster.lease import Leases

        super().__init__()
        self.config = config
        prefix = prefix or config.cluster.prefix
        self.prefix = prefix
        self.node = config.cluster.node
        self.gate = LeaseGate(registry, live_bus)
        self.leases = Leases.from_config(config, reactor, on_lost=self.gate.lost, on_takeover=self.gate.takeover,
                                         prefix=prefix)
        delivery = LiveDelivery(live_bus)

        def deliver(machine, event, payload, origin):
            if event == "status":  # who feeds it now: the alarm rules skip machines fed elsewhere
                registry.note_remote(machine, origin, bool(payload.get("connected")))
            delivery(machine, event, payload, origin)
        self.bus = ClusterBus.from_config(config, reactor, deliver, registry=registry, prefix=prefix,
                                          owns=self.leases.holds)
        self.gate.leases, self.gate.bus = self.leases, self.bus
        self.bus.setServiceParent(self)  # started first, stopped last
        self.leases.setServiceParent(self)
        live_bus.attach(self.bus)

    def throttle(self, clock):
        """A cluster-wide notification throttle on the bus's Redis link (the
        notifier configures its interval and cap as for its own)."""
        from tsrmon.notify.throttle import ClusterThrottle

        return ClusterThrottle(clock, 0, 0, self.bus.commands, prefix=self.prefix, node=self.node)

    def with_cluster(self, statuses):
        """``/machines``: this node's machine statuses (``Machine.status()``
        dicts) with ``node`` added, plus the machines other nodes feed (a
        Deferred; this node's list alone while Redis is away)."""
        for st in statuses:
            st.setdefault("node", self.node if st.get("connected") else None)
        d = self.bus.machines()

        def merge(directory):
            by_name = {st["machine"]: st for st in statuses}
            for name, entry in directory.items():
                st = by_name.get(name)
                if st is not None and st.get("connected"):
                    continue  # fed here: this node knows best
                if entry["node"] == self.node and not entry["connected"]:
                    continue
                remote = {"machine": name, "node": entry["node"], "connected": entry["connected"],
                          "last_frame": entry["last_frame"], "connected_since": entry["connected_since"],
                          "disconnected_at": entry["disconnected_at"]}
                if st is None:
                    remote.setdefault("sensors", [])
                    by_name[name] = remote
                elif entry["connected"] or (entry["last_frame"] or 0) > (st.get("last_frame") or 0):
                    st.update(remote)
            return [by_name[n] for n in sorted(by_name)]
        return d.addCallbacks(merge, lambda f: statuses)

    def reconfigure(self, config):
        if config.cluster != self.config.cluster:
            self.log.warn("SIGHUP: CLUSTER changed: takes effect after a restart")
        self.config = config


def build(config, reactor, registry, live_bus, prefix=None):
    """The cluster room, or None when CLUSTER.REDIS is not set; ``prefix``
    (tests) overrides CLUSTER.PREFIX."""
    if not config.cluster.enabled:
        return None
    return ClusterRoom(config, reactor, registry, live_bus, prefix)
