"""SIGHUP reloads SERVER.TRUSTED_PROXIES (the daemon's reload, in process):
a PROXY header from 127.0.0.1 is not read before the reload, and gives the
DAQ's own address after it.  Skips until makeService holds the list as a
reloadable part (tsrmon.cluster.proxy.TrustedProxies; an issue 16 wiring
request)."""

import pytest
import pytest_twisted
import yaml
from twisted.internet import endpoints, reactor

from tests.cluster.helpers import until
from tests.cluster.test_proxy import Client, v2_header
from tsrmon.config import load_config
from tsrmon.daqside.wire import TERMINATOR, encode_pickle
from tsrmon.service import makeService

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def write(path, tmp_path, trusted):
    path.write_text(yaml.safe_dump({
        "SERVER": {"HOST": "127.0.0.1", "PORT": 0, "TCP_PORT": 0, "TRUSTED_PROXIES": trusted},
        "DATA": {"PATH": str(tmp_path / "data"), "MIN_FREE_MB": 0}, "DATABASE": {"PATH": str(tmp_path / "db")},
        "LOGGER": {"PATH": str(tmp_path / "log")}, "TIME": {"ZONE": "UTC"}}))


@pytest_twisted.inlineCallbacks
def test_sighup_reloads_the_trusted_proxies(tmp_path):
    path = tmp_path / "tsrmon.yml"
    write(path, tmp_path, [])
    top = makeService(load_config(str(path)), reactor=reactor, lock=False)
    if "trusted_proxies" not in [child.name for child in top]:
        pytest.skip("makeService does not hold SERVER.TRUSTED_PROXIES as a reloadable part yet "
                    "(issue 16 wiring request)")
    top.startService()
    try:
        yield top.started
        port = top.rooms["daq"].port.getHost().port
        hub = top.rooms["hub"]

        @pytest_twisted.inlineCallbacks
        def daq(machine):
            point = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
            client = yield endpoints.connectProtocol(point, Client())
            # The deployed pickle frames; before the reload the header is
            # not read: garbage the decoder skips up to the next frame.
            client.transport.write(v2_header("10.1.2.3", 4567) + TERMINATOR + encode_pickle("name", machine))
            return client

        before = yield daq("M1")
        yield until(lambda: "M1" in hub.machines and hub.machines["M1"].connected)
        assert hub.machines["M1"].peer_host == "127.0.0.1"

        write(path, tmp_path, ["127.0.0.1/32"])
        top.reload()  # what SIGHUP runs
        after = yield daq("M2")
        yield until(lambda: "M2" in hub.machines and hub.machines["M2"].connected)
        assert hub.machines["M2"].peer_host == "10.1.2.3"
        for client in (before, after):
            if not client.closed:
                client.transport.loseConnection()
    finally:
        yield top.stopService()
