"""``tsrmon simulate`` and the demo feed against a running listener."""

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.ingest.helpers import port_of, start_listener, wait_until
from tsrmon import simulate
from tsrmon.daqside.demo import DEMO_MACHINES, DemoService


@pytest.mark.parametrize("encoding", [[], ["--json"]])
@pytest_twisted.inlineCallbacks
def test_simulate_against_a_running_listener(tmp_path, encoding):
    svc, hub, rec = start_listener(tmp_path)
    try:
        args = simulate.parse_args(["--server", f"127.0.0.1:{port_of(svc)}", "--machines", "3",
                                    "--sensors", "3", "--rate", "20", "--chunk", "64",
                                    "--duration", "1.0", "--fault-every", "0.2"] + encoding)
        sim = yield simulate.run(reactor, args)
        yield wait_until(lambda: not svc.factory.connections)
        assert sorted(hub.machines) == ["SimMachine1", "SimMachine2", "SimMachine3"]
        for name, machine in hub.machines.items():
            assert machine.sensors == {f"m{name[-1]}_vib1": "VIB", f"m{name[-1]}_vib2": "VIB",
                                       f"m{name[-1]}_temp": "TEMP"}
            assert machine.refused_frames == 0 and machine.faults > 0
        assert sum(m.frames for m in hub.machines.values()) == sim.frames_sent() - 3  # minus handshakes
        assert all(len(a[3]) == 64 for a in rec.added)
        temps = [v for a in rec.added if a[2] == "TEMP" for v in a[3]]
        assert 30 < sum(temps) / len(temps) < 50
    finally:
        yield svc.stopService()


def test_parse_args_refuses_bad_server():
    with pytest.raises(SystemExit):
        simulate.parse_args(["--server", "nohost"])


@pytest_twisted.inlineCallbacks
def test_demo_service_feeds_data_and_an_anomaly(tmp_path):
    svc, hub, rec = start_listener(tmp_path)
    address = [None]
    demo = DemoService(svc.config, reactor, lambda: address[0], fault_every=0.1, rate=10)
    demo.startService()
    try:
        address[0] = ("127.0.0.1", port_of(svc))  # the listener is "up" only now
        yield wait_until(lambda: len(hub.machines) == len(DEMO_MACHINES)
                         and hub.notifier.faults and all(m.samples for m in hub.machines.values()))
        yield wait_until(lambda: all(m.faults for m in hub.machines.values()))
        assert {f[0] for f in hub.notifier.faults} == {"ShotBlast"}  # one anomaly source
        assert all(f[1] > f[2] for f in hub.notifier.faults)
        assert all(f[1] <= f[2] for f in rec.faults if f[0] != "ShotBlast")
    finally:
        yield demo.stopService()
        yield svc.stopService()


@pytest.mark.slow  # a real process or a minute's worth of work: the fast set stays under a minute
@pytest.mark.timeout(90)
@pytest_twisted.inlineCallbacks
def test_simulate_main_in_a_subprocess(tmp_path):
    """The CLI entry point itself (``tsrmon simulate`` calls simulate.main)."""
    import sys

    from twisted.internet import utils

    svc, hub, rec = start_listener(tmp_path)
    try:
        code = ("import sys; from tsrmon.simulate import main; "
                "main(sys.argv[1:])")
        out, err, status = yield utils.getProcessOutputAndValue(
            sys.executable, ["-c", code, "--server", f"127.0.0.1:{port_of(svc)}", "--machines", "2",
                             "--rate", "10", "--duration", "1", "--json"], env=None)
        assert status == 0, err
        assert b"sent" in out
        yield wait_until(lambda: len(hub.machines) == 2 and not svc.factory.connections)
        assert all(m.frames > 0 and m.refused_frames == 0 for m in hub.machines.values())
    finally:
        yield svc.stopService()
