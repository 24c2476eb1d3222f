"""A running node whose PostgreSQL goes away and comes back (issue 16: "a
node that loses PostgreSQL keeps ingesting into memory, reports it in
/healthz, and catches up when they return").  The store reaches the real
PostgreSQL through a TCP relay on 127.0.0.1 that the test cuts (every
connection dropped, the port closed) and then opens again on the same port."""

import psycopg
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads
from twisted.protocols import portforward

from tests.store.pg_fixtures import fresh_database
from tests.store.test_contract_backends import row
from tests.web.conftest import make_config
from tsrmon.store.postgres.store import PostgresStore

T0 = 1_796_025_600

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


class Relay:
    """127.0.0.1:<port> -> PostgreSQL, which can be cut and restored."""

    def __init__(self, host, port):
        self.factory = portforward.ProxyFactory(host, port)
        self.servers = []
        build = self.factory.buildProtocol

        def tracked(addr):
            p = build(addr)
            self.servers.append(p)
            return p

        self.factory.buildProtocol = tracked
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.number = self.port.getHost().port

    @defer.inlineCallbacks
    def cut(self):
        yield self.port.stopListening()
        for p in self.servers:
            if p.transport is not None:
                p.transport.abortConnection()
            if getattr(p, "peer", None) is not None and p.peer.transport is not None:
                p.peer.transport.abortConnection()
        self.servers = []

    def restore(self):
        self.port = reactor.listenTCP(self.number, self.factory, interface="127.0.0.1")

    def close(self):
        return self.port.stopListening()


def hour_rows(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count, sum FROM stat_hour WHERE machine = 'M'").fetchall()


@pytest_twisted.inlineCallbacks
def test_a_running_node_queues_while_postgresql_is_away_and_catches_up(tmp_path):
    dsn, drop = fresh_database()
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    relay = Relay(info.get("host") or "127.0.0.1", int(info.get("port") or 5432))
    info.update(host="127.0.0.1", port=str(relay.number), connect_timeout="2")
    via = psycopg.conninfo.make_conninfo(**info)
    cfg = make_config(tmp_path).replace(database={"backend": "postgresql", "dsn": via})
    store = PostgresStore(cfg, reactor)
    # prepare() connects synchronously: off the reactor, which runs the relay.
    yield threads.deferToThread(store.prepare)
    store.startService()
    try:
        store.ensure_sensor("M", "vib", "VIB", "REAL")
        store.upsert_sums("M", [row("vib", "hour", T0, "2026-11-30 17:00:00", [1.0, 2.0])])
        yield store.flush()
        assert store.healthy() and hour_rows(dsn) == [(2, 3.0)]

        yield relay.cut()
        # Ingest goes on: every flush while PostgreSQL is away keeps its rows,
        # compacted into the same bucket, and the store says so in /healthz.
        for values in ([3.0], [4.0, 5.0]):
            store.upsert_sums("M", [row("vib", "hour", T0, "2026-11-30 17:00:00", values)])
            yield store.flush()
        health = store.health()
        assert health["state"] == "failing" and health["error"] and health["attempts"] >= 2
        assert store.queued_rows >= 1
        assert hour_rows(dsn) == [(2, 3.0)]  # nothing half-written

        relay.restore()
        for _ in range(100):  # the pool reconnects at a following flush
            yield store.flush()
            if store.healthy():
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        assert store.health()["state"] == "ok" and store.queued_rows == 0
        # Every sample counted once: the queued rows were added, not replaced or doubled.
        assert hour_rows(dsn) == [(5, 15.0)]
    finally:
        yield store.stopService()
        yield relay.close()
        drop()
