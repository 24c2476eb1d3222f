"""DAQ silence in a cluster: a node whose machine now feeds through another
node (its DAQ reconnected there, or its claim here was refused by the
lease) does not raise daq-silent from the frames it last had; it judges
the machine again once that node lets go or the DAQ comes back here."""

import pytest
from twisted.internet import defer, task

from tsrmon.alarms.service import AlarmService
from tsrmon.cluster.room import LeaseGate
from tsrmon.config import build_config
from tsrmon.hub import MachineHub

pytestmark = [pytest.mark.timeout(30)]


class Conn:
    peer_host = "10.0.0.5"

    def __init__(self):
        self.closed = None

    def takeover(self, reason):
        self.closed = reason

    def storage_congested(self, flag):
        pass


class Quiet:
    def machine_status(self, machine):
        pass


class Refusing:
    """The leases of a gate whose machine another node holds."""

    def acquire(self, machine, peer):
        return defer.succeed(False)

    def holds(self, machine):
        return False


@pytest.fixture
def node(tmp_path):
    config = build_config({"DATABASE": {"PATH": str(tmp_path / "db")}, "TIME": {"ZONE": "UTC"},
                           "ALARM": {"RULES": [{"builtin": "daq-silent", "after": 30},
                                               {"builtin": "daq-rate-drop", "enabled": False}]}},
                          None, str(tmp_path))
    clock = task.Clock()
    clock.advance(1_780_000_000)
    hub = MachineHub(config, clock)
    raised = []
    svc = AlarmService(config, clock, hub.registry, emit=lambda m, e, p: raised.append((m, p["event"])),
                       reactor=clock)
    svc._ready = True  # the stored state is not what this test is about
    yield clock, hub, svc, raised


def fed_then_gone(clock, hub):
    conn = Conn()
    machine = hub.claim("M1", conn)
    machine.last_frame = clock.seconds()
    hub.release(machine, conn)
    return machine


def test_a_machine_fed_by_another_node_is_not_silent_here(node):
    clock, hub, svc, raised = node
    fed_then_gone(clock, hub)
    hub.registry.note_remote("M1", "b", True)  # node b's status: it feeds M1 now
    clock.advance(120)
    svc.check_machines()
    assert raised == []
    hub.registry.note_remote("M1", "b", False)  # b lost it too: silence is judged here again
    svc.check_machines()
    assert raised == [("M1", "raised")]


def test_a_claim_the_lease_refused_does_not_make_the_machine_silent_here(node):
    clock, hub, svc, raised = node
    gate = LeaseGate(hub.registry, Quiet())
    gate.leases, gate.bus = Refusing(), Quiet()
    conn = Conn()
    machine = hub.claim("M1", conn)
    machine.last_frame = clock.seconds()  # frames taken while the lease was asked
    gate.claimed(machine, conn)
    assert conn.closed and machine.fed_elsewhere == "another node"
    clock.advance(120)
    svc.check_machines()
    assert raised == []
    again = Conn()
    hub.claim("M1", again).last_frame = clock.seconds() - 60  # the DAQ is back here, then silent
    svc.check_machines()
    assert raised == [("M1", "raised")]
