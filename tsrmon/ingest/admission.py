"""Admission of DAQ connections: the factory of the DAQ port.

Which connections may stay (see docs/security.md): ``DAQ.ALLOW``; at most
``DAQ.MAX_CONNECTIONS_PER_HOST`` per source address and ``DAQ.MAX_CONNECTIONS``
in all, where a full table first closes the oldest connection that has not
named itself; and the global buffer budget ``DAQ.MAX_TOTAL_BUFFER_BYTES``:
over it, the connection that grew stops being read until the total falls,
and one paused longer than ``DAQ.MAX_PAUSE`` while the total stays over is
closed, largest buffer first.  Each connection is a
:class:`~tsrmon.ingest.protocol.DAQProtocol`.
"""

import ipaddress

from twisted.internet import defer, protocol
from twisted.logger import Logger

from tsrmon.ingest.protocol import MIN_WALK, WALK_BUDGET, DAQProtocol
from tsrmon.ingest.opcodes import Limits
from tsrmon.peerlog import PeerLog


def limits_of(config):
    daq = config.daq
    return Limits(max_frame_bytes=daq.max_frame_bytes, max_samples=daq.max_samples_per_frame)



class DAQFactory(protocol.Factory):
    log = Logger()
    noisy = False

    COUNTERS = (
        "connections", "refused_connections", "refused_allow", "refused_max_connections", "refused_per_host",
        "evicted_unnamed", "refused_name_timeout", "refused_unnamed_buffer", "refused_buffer",
        "refused_buffer_budget", "refused_undecodable", "refused_token", "refused_names",
        "refused_name_bad", "refused_name_not_allowed", "refused_name_max_machines", "refused_name_in_use",
        "refused_name_case", "refused_frames", "refused_expansion", "bytes", "paused", "budget_paused",
        "errors")
    # frames, samples, dropped_bytes and dropped_nonfinite are the machines'
    # (MachineRegistry.totals), counted once.

    def __init__(self, config, hub, clock):
        self.hub = hub
        self.clock = clock
        self.connections = set()
        self._order = {}  # the same connections, oldest first (conn -> None)
        self.per_host = {}  # peer host -> number of open connections
        self.buffered_total = 0  # bytes buffered by every connection together
        self.budget_paused = set()  # connections not read for the buffer budget
        self.walking = set()  # connections walking a long frame in turns
        self.counters = dict.fromkeys(self.COUNTERS, 0)
        self.peerlog = PeerLog(self.log, clock)
        self._lost_waiters = []
        self._budget_timer = None
        self.reconfigure(config)

    def reconfigure(self, config):
        self.config = config
        self.limits = limits_of(config)
        self.allow = [ipaddress.ip_network(c, strict=False) for c in config.daq.allow]
        self.check_budget()

    def buildProtocol(self, addr):
        return DAQProtocol(self)

    def admit(self, conn):
        """None, or (reason, text) why this connection is refused.

        DAQ.ALLOW first; then the per-host and the global cap, each of which
        closes the oldest unnamed connection (of that host, or of all) to
        make room before it refuses anyone."""
        counters = self.counters
        daq = self.config.daq
        host = conn.peer_host
        if self.allow:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                address = None
            if address is not None and address.version == 6 and address.ipv4_mapped:
                address = address.ipv4_mapped
            if address is None or not any(address in net for net in self.allow):
                counters["refused_connections"] += 1
                counters["refused_allow"] += 1
                return "refused_allow", f"{host} is not in DAQ.ALLOW"
        per_host = daq.max_connections_per_host
        if self.per_host.get(host, 0) >= per_host and not self._evict_unnamed(host):
            counters["refused_connections"] += 1
            counters["refused_per_host"] += 1
            return "refused_per_host", f"DAQ.MAX_CONNECTIONS_PER_HOST ({per_host}) reached for {host}"
        cap = daq.max_connections
        if len(self.connections) >= cap and not self._evict_unnamed(None):
            counters["refused_connections"] += 1
            counters["refused_max_connections"] += 1
            return "refused_max_connections", f"DAQ.MAX_CONNECTIONS ({cap}) reached"
        self.connections.add(conn)
        self._order[conn] = None
        self.per_host[host] = self.per_host.get(host, 0) + 1
        counters["connections"] += 1
        return None

    def _evict_unnamed(self, host):
        """Close the oldest connection without a name (of ``host`` if given)."""
        for old in self._order:
            if old.machine is None and not old.closing and (host is None or old.peer_host == host):
                self.counters["evicted_unnamed"] += 1
                self.peerlog.warn(old.peer_host, "evicted_unnamed",
                                  "closing DAQ connection from {peer}: no name frame yet and the "
                                  "connection table is full", peer=old.peer)
                old._close()
                self._remove(old)  # its slot is free now, not when the socket is gone
                return True
        return False

    def _remove(self, conn):
        if conn in self.connections:
            self.connections.discard(conn)
            self._order.pop(conn, None)
            n = self.per_host.get(conn.peer_host, 0) - 1
            if n > 0:
                self.per_host[conn.peer_host] = n
            else:
                self.per_host.pop(conn.peer_host, None)

    # -- the global buffer budget ------------------------------------------
    def buffer_changed(self, conn, buffered):
        """``conn`` now buffers ``buffered`` bytes (0 once it closes)."""
        self.buffered_total += buffered - conn.buffered
        conn.buffered = buffered
        budget = self.config.daq.max_total_buffer_bytes
        if self.buffered_total > budget:
            if buffered and conn.budget_paused is None and not conn.closing:
                conn.budget_paused = self.clock.seconds()
                self.budget_paused.add(conn)
                self.counters["budget_paused"] += 1
                conn.update_reading()
                self.peerlog.warn(conn.peer_host, "budget_paused",
                                  "{total} bytes buffered over all DAQ connections exceed "
                                  "DAQ.MAX_TOTAL_BUFFER_BYTES ({budget}): reading from {peer} paused",
                                  total=self.buffered_total, budget=budget, peer=conn.peer)
                self._arm_budget_timer()
        elif self.budget_paused:
            self._resume_budget()

    def _paused_for_budget(self):
        return [c for c in self.budget_paused if not c.closing]

    def _resume_budget(self):
        paused, self.budget_paused = self.budget_paused, set()
        for c in paused:
            c.budget_paused = None
            c.update_reading()

    def _arm_budget_timer(self):
        if self._budget_timer is None or not self._budget_timer.active():
            wait = max(float(self.config.daq.max_pause), 1.0)
            self._budget_timer = self.clock.callLater(wait, self._budget_expired)

    def _budget_expired(self):
        """Still over the budget after DAQ.MAX_PAUSE: the paused connection
        holding the most is closed so the others can finish their frames."""
        self._budget_timer = None
        budget = self.config.daq.max_total_buffer_bytes
        paused = self._paused_for_budget()
        if self.buffered_total > budget and paused:
            victim = max(paused, key=lambda c: c.buffered)
            victim._refuse_connection(
                "buffer_budget", f"{victim.buffered} bytes of an unfinished frame held while all DAQ "
                f"connections buffer more than DAQ.MAX_TOTAL_BUFFER_BYTES ({budget})")
        self.check_budget()

    def check_budget(self):
        if self.buffered_total <= self.config.daq.max_total_buffer_bytes:
            self._resume_budget()
        elif self._paused_for_budget():
            self._arm_budget_timer()

    def walk_budget(self):
        """Opcodes one connection may walk this turn (WALK_BUDGET shared)."""
        return max(MIN_WALK, WALK_BUDGET // max(1, len(self.walking)))

    def forget(self, conn):
        self.buffer_changed(conn, 0)
        self.budget_paused.discard(conn)
        self.walking.discard(conn)
        self._remove(conn)
        if not self.connections:
            if self._budget_timer is not None and self._budget_timer.active():
                self._budget_timer.cancel()
            self._budget_timer = None
            waiters, self._lost_waiters = self._lost_waiters, []
            for d in waiters:
                d.callback(None)

    def when_no_connections(self):
        if not self.connections:
            return defer.succeed(None)
        d = defer.Deferred()
        self._lost_waiters.append(d)
        return d
