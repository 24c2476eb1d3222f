"""One HTTP policy for REST and /socket.io/, as the daemon wires it.

The site here is built the way ``makeService`` builds it: one
:class:`tsrmon.web.policy.HttpPolicy` shared by :class:`RestAPI` (its gate) and
:class:`LiveService`, the live layer mounted behind the REST gate.  A SIGHUP
is what ``TsrmonService.reload`` does: every room's ``reconfigure(config)``.
Raw HTTP and WebSocket clients; the real client libraries are in
tests/hostile/test_http_policy.py.
"""

import json

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.server import Site

from tests.live.conftest import make_config
from tests.live.helpers import HTTP, eventually, sio_ws, ws_open
from tsrmon.hub import LiveBus, MachineHub, MachineRegistry
from tsrmon.live.service import LiveService
from tsrmon.web.policy import HttpPolicy
from tsrmon.web.rest import RestAPI

SIO = "/socket.io/?EIO=4&transport=polling"


class PolicySite:
    """Hub + LiveService + RestAPI sharing one HttpPolicy, on 127.0.0.1:0."""

    def __init__(self, tmp_path, auth=None, cors=None, shared=True):
        self.tmp_path = tmp_path
        self.config = make_config(tmp_path, auth=auth, cors=cors)
        self.registry = MachineRegistry(self.config, reactor)
        self.registry.remember(["m1"])
        self.policy = HttpPolicy.from_config(self.config) if shared else None
        self.bus = LiveBus()  # statistics' side: tests hand seconds to it
        self.live = LiveService(self.config, reactor, self.registry, policy=self.policy, bus=self.bus)
        self.hub = MachineHub(self.config, reactor, registry=self.registry, live=self.bus)
        self.rest = RestAPI(self.config, reactor, self.hub, None, live=self.live, policy=self.policy)
        # The order of makeService's rooms: the policy before live and rest.
        self.rooms = ([self.policy] if shared else []) + [self.live, self.rest]
        self.live.startService()
        self.port = reactor.listenTCP(0, Site(self.rest.resource()), interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"
        self.ws_url = f"ws://127.0.0.1:{self.port.getHost().port}"

    def sighup(self, auth=None, cors=None):
        """What TsrmonService.reload does with a new configuration file."""
        new = make_config(self.tmp_path, auth=auth, cors=cors)
        for room in self.rooms:
            room.reconfigure(new)
        return new

    async def stop(self):
        await self.live.stopService()
        await self.port.stopListening()


@pytest.fixture
def site(tmp_path):
    made = []

    def make(**kw):
        s = PolicySite(tmp_path, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        pytest_twisted.blockon(defer.ensureDeferred(s.stop()))


@pytest.fixture
def http(site):
    clients = []

    def make(url):
        h = HTTP(url)
        clients.append(h)
        return h

    yield make
    for h in clients:
        pytest_twisted.blockon(defer.ensureDeferred(h.close()))


async def polling_connect(http, headers=None, query="", auth=None):
    """Handshake (with ``headers``/``query``), then CONNECT /sio/m1 over polling
    *without* any header, as python-engineio does; the CONNECT reply."""
    resp, body = await http.get(SIO + query, headers=headers)
    if resp.code != 200:
        return resp.code, json.loads(body)
    sid = json.loads(body[1:])["sid"]
    payload = b"40/sio/m1," + (json.dumps(auth).encode() if auth is not None else b"")
    resp, body = await http.post(f"{SIO}&sid={sid}", payload)
    assert (resp.code, body) == (200, b"ok"), body
    resp, body = await http.get(f"{SIO}&sid={sid}")
    assert resp.code == 200, body
    return 200, body.decode()


@pytest_twisted.ensureDeferred
async def test_polling_requests_after_a_bearer_handshake_need_no_header(site, http):
    s = site(auth=["s3cret"])
    h = http(s.url)
    code, reply = await polling_connect(h, headers={"Authorization": "Bearer s3cret"})
    assert code == 200 and reply.startswith('40/sio/m1,{"sid"'), reply
    code, reply = await polling_connect(h, query="&token=s3cret")
    assert reply.startswith('40/sio/m1,{"sid"'), reply
    # REST is still gated by the same tokens.
    resp, _ = await h.get("/machines")
    assert resp.code == 401
    resp, _ = await h.get("/machines", headers={"Authorization": "Bearer s3cret"})
    assert resp.code == 200


@pytest_twisted.ensureDeferred
async def test_connect_auth_payload_reaches_the_live_layer_through_the_gate(site, http):
    s = site(auth=["s3cret"])
    h = http(s.url)
    code, reply = await polling_connect(h, auth={"token": "s3cret"})
    assert reply.startswith('40/sio/m1,{"sid"'), reply
    code, reply = await polling_connect(h)
    assert reply == '44/sio/m1,{"message":"Not authorized"}'
    code, reply = await polling_connect(h, auth={"token": "wrong"})
    assert reply == '44/sio/m1,{"message":"Not authorized"}'
    ws = await sio_ws(s.ws_url, auth={"token": "s3cret"})
    assert ws.connect_reply.startswith('40/sio/m1,{"sid"')
    ws = await sio_ws(s.ws_url)
    assert ws.connect_reply == '44/sio/m1,{"message":"Not authorized"}'
    # A wrong token presented at the handshake is refused there.
    assert await polling_connect(h, headers={"Authorization": "Bearer nope"}) == \
        (403, {"code": 4, "message": "Forbidden"})
    with pytest.raises(ConnectionError):
        await ws_open(s.ws_url + "/socket.io/?EIO=4&transport=websocket",
                      headers={"Authorization": "Bearer nope"})


@pytest.mark.parametrize("shared", [True, False], ids=["shared-policy", "own-policies"])
@pytest_twisted.ensureDeferred
async def test_sighup_rotates_tokens_for_rest_and_both_transports(site, http, shared):
    s = site(auth=["old"], shared=shared)
    h = http(s.url)
    before = await sio_ws(s.ws_url, query="&token=old")
    assert before.connect_reply.startswith('40/sio/m1,{"sid"')
    s.sighup(auth=["new"])
    # REST
    assert (await h.get("/machines", headers={"Authorization": "Bearer new"}))[0].code == 200
    assert (await h.get("/machines", headers={"Authorization": "Bearer old"}))[0].code == 401
    # Socket.IO, polling: header, query, auth payload
    for kw in ({"headers": {"Authorization": "Bearer new"}}, {"query": "&token=new"},
               {"auth": {"token": "new"}}):
        code, reply = await polling_connect(h, **kw)
        assert code == 200 and reply.startswith('40/sio/m1,{"sid"'), (kw, reply)
    assert (await polling_connect(h, headers={"Authorization": "Bearer old"}))[0] == 403
    assert (await polling_connect(h, auth={"token": "old"}))[1] == '44/sio/m1,{"message":"Not authorized"}'
    # Socket.IO, WebSocket
    ws = await sio_ws(s.ws_url, query="&token=new")
    assert ws.connect_reply.startswith('40/sio/m1,{"sid"')
    ws = await sio_ws(s.ws_url, auth={"token": "new"})
    assert ws.connect_reply.startswith('40/sio/m1,{"sid"')
    with pytest.raises(ConnectionError):
        await ws_open(s.ws_url + "/socket.io/?EIO=4&transport=websocket&token=old")
    # The client let in by the removed token is disconnected from its namespace.
    frames = await before.recv_until(lambda f: f.startswith("41"))
    assert frames[-1] == "41/sio/m1,"
    assert s.live.counters()["revoked"] == 1
    # Left: the five clients connected with the new token (3 polling, 2 WebSocket).
    await eventually(lambda: s.live.counters()["namespace_clients"] == 5)


@pytest_twisted.ensureDeferred
async def test_tokens_switched_on_by_sighup_apply_to_connected_clients(site):
    s = site()
    open_client = await sio_ws(s.ws_url)
    assert open_client.connect_reply.startswith('40/sio/m1,{"sid"')
    s.sighup(auth=["fresh"])
    assert (await open_client.recv_until(lambda f: f.startswith("41")))[-1] == "41/sio/m1,"
    assert (await sio_ws(s.ws_url)).connect_reply == '44/sio/m1,{"message":"Not authorized"}'
    assert (await sio_ws(s.ws_url, auth={"token": "fresh"})).connect_reply.startswith('40/sio/m1,{"sid"')


@pytest_twisted.ensureDeferred
async def test_sighup_changes_cors_origins_for_rest_and_socketio(site, http):
    s = site(cors=["https://a.example"])
    h = http(s.url)

    async def allowed(path, origin):
        resp, _ = await h.get(path, headers={"Origin": origin})
        return resp.headers.getRawHeaders("access-control-allow-origin")

    assert await allowed("/machines", "https://a.example") == ["https://a.example"]
    assert await allowed(SIO, "https://a.example") == ["https://a.example"]
    s.sighup(cors=["https://b.example"])
    for path in ("/machines", SIO):
        assert await allowed(path, "https://a.example") is None, path
        assert await allowed(path, "https://b.example") == ["https://b.example"], path


@pytest_twisted.ensureDeferred
async def test_socketio_preflight_is_answered_by_the_live_layer(site, http):
    # A browser polling with an Authorization header preflights its POST;
    # the REST gate (GET/HEAD/OPTIONS only) used to answer 405.
    s = site(auth=["s3cret"], cors=["https://app.example"])
    h = http(s.url)
    resp, body = await h.request("OPTIONS", SIO, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert resp.code == 204 and body == b""
    assert "POST" in resp.headers.getRawHeaders("access-control-allow-methods")[0]
    assert resp.headers.getRawHeaders("access-control-allow-origin") == ["https://app.example"]
    assert resp.headers.getRawHeaders("access-control-allow-headers") == ["authorization,content-type"]
    # REST preflights are still the gate's.
    resp, _ = await h.request("OPTIONS", "/machines", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert resp.code == 405


def test_live_layer_reads_the_policy_it_was_given(tmp_path):
    """Passed in, not copied: the engine and Socket.IO hold the same object."""
    config = make_config(tmp_path, auth=["t"])
    policy = HttpPolicy.from_config(config)
    live = LiveService(config, reactor, MachineRegistry(config, reactor), policy=policy)
    assert live.engine.policy is policy and live.sio.policy is policy
    rest = RestAPI(config, reactor, live.registry, None, live=live)
    assert rest.policy is policy  # a RestAPI given the live layer shares its policy


@pytest_twisted.ensureDeferred
async def test_refused_tokens_are_logged_rate_limited_per_client(site, http):
    from twisted.logger import globalLogPublisher

    lines = []

    def observe(event):
        if event.get("log_namespace", "").startswith("tsrmon.web.gate"):
            lines.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        s = site(auth=["s3cret"])
        h = http(s.url)
        for _ in range(20):
            resp, _ = await h.get("/machines?token=" + "x" * 3000, headers={"Authorization": "Basic Zm9vOmJhcg=="})
            assert resp.code == 401
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(lines) == 5  # PeerLog's burst for (127.0.0.1, refused token)
    assert all(e["client"] == "127.0.0.1" and len(e["path"]) <= 100 for e in lines)
