"""``dashboard_resource`` over real HTTP (127.0.0.1, port 0), with and
without built assets, served directly and through a Klein branch route."""

import json

import pytest
import pytest_twisted
import treq
from klein import Klein
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from tsrmon.config import build_config
from tsrmon.dashboard import dashboard_front, dashboard_resource
from tsrmon.dashboard.resource import STATIC_DIR

INDEX = (b'<!doctype html><html><head><link rel="stylesheet" href="assets/app-AB12.css">'
         b'<script type="module" src="assets/app-AB12.js"></script></head>'
         b'<body data-tsrmon-dashboard="built"><div id="app"></div></body></html>')


@pytest.fixture
def config(tmp_path):
    return build_config({}, None, str(tmp_path))


@pytest.fixture
def built(tmp_path):
    static = tmp_path / "static"
    (static / "assets" / "sub").mkdir(parents=True)
    (static / "index.html").write_bytes(INDEX)
    (static / "assets" / "app-AB12.js").write_text("console.log('tsrmon');\n")
    (static / "assets" / "app-AB12.css").write_text("body{color:red}\n")
    (static / "assets" / "app-AB12.js.map").write_text("{}")
    (static / "secret.txt").write_text("outside assets/")
    return static


def _klein_site(resource):
    """The way the lead mounts it: a Klein app with a branch route at /."""
    app = Klein()

    @app.route("/", branch=True)
    def dashboard(request):
        return resource

    @app.route("/stat/machineList")
    def machine_list(request):
        return json.dumps({"machine_list": []})

    return Site(app.resource())


@pytest.fixture
def serve():
    ports = []

    def start(site):
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        ports.append(port)
        return f"http://127.0.0.1:{port.getHost().port}"

    yield start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


async def _get(url, method="GET", headers=None):
    response = await treq.request(method, url, headers=headers, timeout=5)
    return response, await response.content()


def _header(response, name):
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


@pytest.mark.parametrize("mount", ["root", "klein"])
@pytest_twisted.ensureDeferred
async def test_built_assets_are_served_with_types_and_cache_headers(config, built, serve, mount):
    resource = dashboard_resource(config, static_dir=str(built))
    base = serve(Site(resource) if mount == "root" else _klein_site(resource))

    for path in ("/", "/index.html"):
        r, body = await _get(base + path)
        assert r.code == 200, path
        assert body == INDEX
        assert _header(r, "content-type") == "text/html; charset=utf-8"
        assert _header(r, "cache-control") == "no-cache"
        csp = _header(r, "content-security-policy")
        assert "script-src 'self'" in csp and "connect-src 'self' ws: wss:" in csp
        assert _header(r, "x-content-type-options") == "nosniff"

    r, body = await _get(base + "/assets/app-AB12.js")
    assert r.code == 200 and body == b"console.log('tsrmon');\n"
    assert _header(r, "content-type") == "text/javascript; charset=utf-8"
    assert _header(r, "cache-control") == "public, max-age=31536000, immutable"
    r, body = await _get(base + "/assets/app-AB12.css")
    assert r.code == 200 and _header(r, "content-type") == "text/css; charset=utf-8"
    r, _ = await _get(base + "/assets/app-AB12.js.map")
    assert r.code == 200 and _header(r, "content-type") == "application/json; charset=utf-8"

    r, body = await _get(base + "/", method="HEAD")
    assert r.code == 200 and body == b""
    assert int(_header(r, "content-length")) == len(INDEX)

    # Not found: JSON, never cached, no listings, nothing outside assets/.
    for path in ("/nope", "/assets/missing.js", "/assets/", "/assets/sub", "/assets/sub/",
                 "/secret.txt", "/assets/../secret.txt", "/assets/%2e%2e/secret.txt", "/index.html/x"):
        r, body = await _get(base + path)
        assert r.code == 404, path
        assert _header(r, "content-type") == "application/json", path
        assert json.loads(body) == {"error": "not found"}, path
        assert b"outside assets" not in body


@pytest_twisted.ensureDeferred
async def test_klein_routes_beside_the_branch_still_answer(config, built, serve):
    base = serve(_klein_site(dashboard_resource(config, static_dir=str(built))))
    r, body = await _get(base + "/stat/machineList")
    assert r.code == 200 and json.loads(body) == {"machine_list": []}


@pytest.mark.parametrize("mount", ["root", "klein"])
@pytest_twisted.ensureDeferred
async def test_without_a_build_the_page_explains_how_to_build(config, tmp_path, serve, mount):
    missing = tmp_path / "not-built"
    resource = dashboard_resource(config, static_dir=str(missing))
    base = serve(Site(resource) if mount == "root" else _klein_site(resource))

    r, body = await _get(base + "/")
    assert r.code == 200
    assert _header(r, "content-type") == "text/html; charset=utf-8"
    text = body.decode("utf-8")
    assert "cd dashboard &amp;&amp; npm ci &amp;&amp; npm run build" in text
    assert 'data-tsrmon-dashboard="not-built"' in text
    assert str(tmp_path) not in text  # no server paths disclosed

    r, body = await _get(base + "/assets/app-AB12.js")
    assert r.code == 404 and json.loads(body) == {"error": "not found"}

    # Built later, while running: served without a restart.
    missing.mkdir()
    (missing / "assets").mkdir()
    (missing / "index.html").write_bytes(INDEX)
    (missing / "assets" / "app-AB12.js").write_text("x")
    r, body = await _get(base + "/")
    assert r.code == 200 and body == INDEX
    r, body = await _get(base + "/assets/app-AB12.js")
    assert r.code == 200 and body == b"x"


@pytest_twisted.ensureDeferred
async def test_the_real_build_output_is_consistent(config, serve):
    """If ``npm run build`` has run here: every file index.html names is served."""
    import os
    import re

    from tests.conftest import require_service

    require_service(os.path.isfile(os.path.join(STATIC_DIR, "index.html")),
                    "dashboard not built (cd dashboard && npm ci && npm run build)")
    base = serve(Site(dashboard_resource(config)))
    r, page = await _get(base + "/")
    assert r.code == 200 and b'data-tsrmon-dashboard="built"' in page
    refs = re.findall(rb'(?:src|href)="(assets/[^"]+)"', page)
    assert {os.path.splitext(ref)[1] for ref in refs} == {b".js", b".css"}
    for ref in refs:
        r, body = await _get(base + "/" + ref.decode())
        assert r.code == 200 and len(body) > 1000, ref
        assert b"cdn" not in page.lower()


class _API(Resource):
    """Stands for the REST API behind its token gate (a leaf, like Gate)."""

    isLeaf = True

    def render(self, request):
        request.setHeader(b"content-type", b"application/json")
        if request.getHeader(b"authorization") != b"Bearer t0k":
            request.setResponseCode(401)
            return b'{"error": "token"}'
        return json.dumps({"api": request.path.decode()}).encode()


@pytest_twisted.ensureDeferred
async def test_front_serves_the_page_without_a_token_and_passes_the_rest(config, built, serve):
    base = serve(Site(dashboard_front(_API(), config, static_dir=str(built))))
    html = {b"Accept": [b"text/html,application/xhtml+xml,*/*;q=0.8"]}
    auth = {b"Authorization": [b"Bearer t0k"]}

    r, body = await _get(base + "/", headers=html)
    assert r.code == 200 and body == INDEX
    r, body = await _get(base + "/index.html")
    assert r.code == 200 and body == INDEX
    r, body = await _get(base + "/assets/app-AB12.js")
    assert r.code == 200 and body == b"console.log('tsrmon');\n"
    r, body = await _get(base + "/assets/nope.js")
    assert r.code == 404 and json.loads(body) == {"error": "not found"}

    # API clients and every other path reach the API and its gate.
    r, body = await _get(base + "/")
    assert r.code == 401
    r, body = await _get(base + "/", headers=auth)
    assert r.code == 200 and json.loads(body) == {"api": "/"}
    r, body = await _get(base + "/stat/hour?machine=m", headers={**auth, **html})
    assert r.code == 200 and json.loads(body) == {"api": "/stat/hour"}
    r, body = await _get(base + "/assetsX")
    assert r.code == 401
