"""API tokens with real client libraries, and token rotation on the real daemon.

- python-socketio (a thread; the reactor serves): long-polling, WebSocket and
  polling→upgrade, each with a Bearer header, ``?token=`` and the CONNECT
  ``auth`` payload.  python-engineio sends custom headers with the handshake
  only, so polling after a Bearer handshake used to be refused (401 at the
  REST gate) until the session id authorised it.
- npm socket.io-client 4.8.4 (``auth: {token}``) and 2.5.0 (``?token=``).
- The real daemon: SIGHUP with new ``AUTH.API_TOKENS`` moves REST and
  ``/socket.io/`` (both transports) to the new token at once; a client let in
  by the old token is disconnected.
"""

import json
import os
import signal
import threading
import time

import pytest
import pytest_twisted
import yaml
from twisted.internet import defer, reactor, threads, utils
from twisted.internet.task import LoopingCall

from tests.conftest import JS_DIR
from tests.daemon.harness import Daemon
from tests.live.conftest import FakeDAQ
from tests.live.helpers import eventually
from tests.live.test_http_policy import PolicySite
from tsrmon.stats.sums import PartialSums


def py_client(url, transports, namespace="/sio/m1", headers=None, auth=None, keep=False):
    """Connect python-socketio; ("ok", transport, client|None) or ("refused", message, None)."""
    import socketio

    sio = socketio.Client(reconnection=False)
    sio.disconnected_event = threading.Event()
    sio.on("disconnect", lambda *a: sio.disconnected_event.set(), namespace=namespace)
    try:
        sio.connect(url, namespaces=[namespace], transports=transports, headers=headers or {},
                    auth=auth, wait_timeout=5)
    except socketio.exceptions.ConnectionError as e:
        return "refused", str(e), None
    transport = sio.transport()
    # Something flows after the handshake (polling: more GETs and POSTs).
    answer = sio.call("status", namespace=namespace, timeout=5) if namespace != "/" else None
    if namespace != "/":
        assert answer["machine"] == "m1"
    if keep:
        return "ok", transport, sio
    sio.disconnect()
    return "ok", transport, None


@pytest.fixture
def site(tmp_path):
    s = PolicySite(tmp_path, auth=["s3cret"])
    yield s
    pytest_twisted.blockon(defer.ensureDeferred(s.stop()))


TRANSPORTS = {"polling": ["polling"], "websocket": ["websocket"], "upgrade": ["polling", "websocket"]}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["bearer", "query", "auth"])
@pytest.mark.parametrize("mode", list(TRANSPORTS))
@pytest_twisted.ensureDeferred
async def test_python_socketio_client_with_a_token(site, mode, how):
    url = site.url + ("?token=s3cret" if how == "query" else "")
    kw = {"bearer": {"headers": {"Authorization": "Bearer s3cret"}}, "auth": {"auth": {"token": "s3cret"}},
          "query": {}}[how]
    result, transport, _ = await threads.deferToThread(py_client, url, TRANSPORTS[mode], **kw)
    assert (result, transport) == ("ok", TRANSPORTS[mode][-1])
    # Without a valid token: refused (wrong Bearer at the handshake, nothing at CONNECT).
    bad = {"bearer": {"headers": {"Authorization": "Bearer wrong"}}, "auth": {"auth": {"token": "wrong"}},
           "query": {}}[how]
    connects = site.live.counters()["connects"]
    result, message, _ = await threads.deferToThread(
        py_client, site.url + ("?token=wrong" if how == "query" else ""), TRANSPORTS[mode], **bad)
    assert result == "refused"
    assert site.live.counters()["connects"] == connects


@pytest.fixture
def streaming(site):
    machine = site.hub.claim("m1", FakeDAQ())

    def tick():
        t = reactor.seconds()
        site.bus.second("m1", "vib1", "VIB", t, PartialSums.of([-1.5, 0.5, 2.0]))
        site.bus.second("m1", "temp1", "TEMP", t, PartialSums.of([20.0, 22.0]))
        site.hub.fault(machine, 7, 5)

    loop = LoopingCall(tick)
    loop.start(0.2)
    # `initialize` answers from the cache: wait until it holds updates.
    pytest_twisted.blockon(defer.ensureDeferred(
        eventually(lambda: site.live.counters()["cached_updates"] >= 2, timeout=10)))
    yield site
    loop.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("version", ["4", "2"], ids=["v4.8.4-auth", "v2.5.0-query"])
@pytest.mark.parametrize("mode", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_node_socketio_client_with_a_token(streaming, node_client, mode, version):
    node, script = node_client
    # client.cjs: 4.x sends the token as the CONNECT auth payload, 2.x as ?token=.
    out, err, code = await utils.getProcessOutputAndValue(
        node, [script, streaming.url, mode, "/sio/m1", "s3cret", version], env=dict(os.environ), path=JS_DIR)
    lines = [json.loads(x) for x in out.decode().splitlines() if x.strip()]
    assert code == 0, (out, err)
    assert {e["event"] for e in lines if "event" in e} == {"initialize", "update", "anomaly"}
    out, err, code = await utils.getProcessOutputAndValue(
        node, [script, streaming.url, mode, "/sio/m1", "wrong", version], env=dict(os.environ), path=JS_DIR)
    lines = [json.loads(x) for x in out.decode().splitlines() if x.strip()]
    assert code == 1 and any("connect_error" in e for e in lines), lines


# -- the real daemon ---------------------------------------------------------

def _http(daemon, path, token):
    import urllib.error
    import urllib.request
    req = urllib.request.Request(daemon.url(path), headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _rewrite(daemon, tokens):
    daemon.config["AUTH"] = {"API_TOKENS": tokens}
    with open(daemon.config_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(daemon.config, f, allow_unicode=True)


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sighup_rotates_api_tokens_on_the_real_daemon(tmp_path):
    daemon = Daemon(tmp_path, overrides={"AUTH": {"API_TOKENS": ["old-token"]}}).start()
    base = f"http://127.0.0.1:{daemon.http_port}"
    clients = []
    try:
        assert _http(daemon, "/machines", "old-token") == 200
        for transports in (["polling"], ["websocket"]):
            assert py_client(base, transports, "/", headers={"Authorization": "Bearer old-token"})[0] == "ok"
        # Kept open over the SIGHUP: it must be disconnected when its token goes.
        ok, _, kept = py_client(base, ["websocket"], "/", auth={"token": "old-token"}, keep=True)
        assert ok == "ok"
        clients.append(kept)

        _rewrite(daemon, ["new-token"])
        daemon.proc.send_signal(signal.SIGHUP)
        assert _wait_for(lambda: "SIGHUP: configuration reloaded" in daemon.log_text()), daemon.log_text()[-3000:]

        assert _http(daemon, "/machines", "new-token") == 200
        assert _http(daemon, "/machines", "old-token") == 401
        for transports in (["polling"], ["websocket"], ["polling", "websocket"]):
            for kw in ({"headers": {"Authorization": "Bearer new-token"}}, {"auth": {"token": "new-token"}}):
                result = py_client(base, transports, "/", **kw)
                assert result[:2] == ("ok", transports[-1]), (transports, kw, result)
            for kw in ({"headers": {"Authorization": "Bearer old-token"}}, {"auth": {"token": "old-token"}}):
                assert py_client(base, transports, "/", **kw)[0] == "refused", (transports, kw)
        assert kept.disconnected_event.wait(10), "the old token's client is still connected"
        assert "namespace client(s) disconnected: their API token is no longer configured" in daemon.log_text()
    finally:
        for c in clients:
            c.disconnect()
        rc = daemon.stop()
    assert rc == 0
