"""Debian's haproxy with etc/haproxy.cfg (ports through its environment
variables) in front of three plain Twisted servers: the DAQ's own source
address arrives through send-proxy-v2, the browser's through X-Forwarded-For."""

import os
import shutil
import socket
import subprocess

import pytest
import pytest_twisted
from twisted.internet import endpoints, reactor
from twisted.web import resource, server

from tests.cluster.helpers import Collect, until
from tests.cluster.test_proxy import RecorderFactory
from tests.conftest import require_service
from tsrmon.cluster.proxy import ProxiedFactory, client_address

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "etc", "haproxy.cfg")
CLIENT = "127.0.0.2"  # the "DAQ PC" / browser: another loopback address than the proxy's
TRUSTED = ["127.0.0.1/32"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WhoAmI(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return client_address(request, TRUSTED).encode()


@pytest_twisted.inlineCallbacks
def test_real_addresses_arrive_through_haproxy():
    require_service(os.path.exists(HAPROXY), "haproxy not installed")
    daqs, ports, env = [], [], dict(os.environ)
    for i in (1, 2, 3):
        inner = RecorderFactory()
        daqs.append(inner)
        daq = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            ProxiedFactory(inner, TRUSTED, reactor))
        web = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server.Site(WhoAmI()))
        ports += [daq, web]
        env[f"TSRMON_NODE{i}_DAQ"] = f"127.0.0.1:{daq.getHost().port}"
        env[f"TSRMON_NODE{i}_HTTP"] = f"127.0.0.1:{web.getHost().port}"
    daq_port, http_port = free_port(), free_port()
    env["TSRMON_DAQ_BIND"] = f"127.0.0.1:{daq_port}"
    env["TSRMON_HTTP_BIND"] = f"127.0.0.1:{http_port}"
    env["TSRMON_MAXCONN"] = "200"  # within a test runner's fd limit
    proc = subprocess.Popen([HAPROXY, "-db", "-f", CONFIG], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", http_port), timeout=0.2).close()
                return True
            except OSError:
                return proc.poll() is not None
        yield until(up, timeout=10)
        assert proc.poll() is None, proc.stdout.read().decode(errors="replace")

        # DAQ feed from 127.0.0.2: the node sees 127.0.0.2 and the PC's own port.
        point = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", daq_port, bindAddress=(CLIENT, 0))
        pc = yield endpoints.connectProtocol(point, Collect())
        source_port = pc.transport.getHost().port
        pc.transport.write(b'{"machine": "M1"}\n')

        def fed():
            return [s for d in daqs for s in d.seen if s.data]
        yield until(lambda: fed(), timeout=10)
        (daq,) = fed()
        assert (daq.peer.host, daq.peer.port) == (CLIENT, source_port)
        assert daq.data == b'{"machine": "M1"}\n'
        pc.transport.loseConnection()

        # HTTP from 127.0.0.2: X-Forwarded-For, believed from the trusted proxy.
        point = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", http_port, bindAddress=(CLIENT, 0))
        browser = yield endpoints.connectProtocol(point, Collect())
        browser.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                b"X-Forwarded-For: 6.6.6.6\r\n\r\n")  # a forged hop stays left of the real one
        answer = yield browser.done
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(CLIENT.encode()), answer
    finally:
        proc.terminate()
        proc.wait(10)
        for p in ports:
            yield p.stopListening()
