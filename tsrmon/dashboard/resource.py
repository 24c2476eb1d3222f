"""The twisted.web resource that serves the built dashboard.

``dashboard/`` (an npm project at the top of the repository) is built with
``cd dashboard && npm ci && npm run build`` into ``tsrmon/dashboard/static/``:
``index.html`` plus content-hashed files under ``assets/``.  This module only
serves that folder; it never builds anything.

- ``/`` and ``/index.html``: the page, ``Cache-Control: no-cache`` (it names
  the current asset hashes, so a rebuild is picked up on the next load).
- ``/assets/<name>``: the hashed files, cached for a year (``immutable``).
- anything else: 404 JSON, like the REST API's unknown routes.

The folder is looked at on every request, so a daemon started before the
build serves the dashboard as soon as the build has run.  Without a build,
``/`` answers a small page that says how to build it.
"""

import json
import os

from twisted.logger import Logger
from twisted.web import resource, static
from twisted.web.resource import getChildForRequest

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
INDEX = "index.html"
ASSETS = "assets"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}

# Everything the page loads comes from this server (no CDN); the live layer is
# reached over the same origin (websocket or long-polling).
CSP = ("default-src 'self'; script-src 'self'; connect-src 'self' ws: wss:; "
       "img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
       "frame-ancestors 'self'; base-uri 'self'; form-action 'self'")

NOT_BUILT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tsrmon: dashboard not built</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42em;margin:2em auto;padding:0 1em}
code,pre{background:#eee;padding:.1em .3em;border-radius:3px}</style></head>
<body data-tsrmon-dashboard="not-built">
<h1>tsrmon is running; the web dashboard is not built</h1>
<p>The daemon, the REST API and the live layer work without it. To get the
dashboard, build its files once (Node.js 18 or newer and npm are needed only
for the build) and reload this page:</p>
<pre>cd dashboard &amp;&amp; npm ci &amp;&amp; npm run build</pre>
<p>run in the tsrmon source folder. The build writes <code>tsrmon/dashboard/static/</code>.</p>
<p>대시보드가 빌드되지 않았습니다. 위 명령으로 빌드한 뒤 새로 고치십시오.</p>
</body></html>
"""


def _json_error(request, code, message):
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps({"error": message}).encode("utf-8")


class _NotFound(resource.Resource):
    isLeaf = True

    def render(self, request):
        return _json_error(request, 404, "not found")


def _common_headers(request):
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"same-origin")


class _AssetFile(static.File):
    """The hashed build output: long-cached, no directory listings."""

    childNotFound = _NotFound()
    contentTypes = dict(CONTENT_TYPES)

    def directoryListing(self):
        return _NotFound()

    def render_GET(self, request):
        if self.isdir():
            return _NotFound().render(request)
        _common_headers(request)
        request.setHeader(b"cache-control", b"public, max-age=31536000, immutable")
        return super().render_GET(request)


class DashboardResource(resource.Resource):
    """Serves ``static_dir`` (see the module docstring)."""

    log = Logger()

    def __init__(self, static_dir=STATIC_DIR):
        super().__init__()
        self.static_dir = static_dir
        self._warned_missing = False

    @property
    def index_path(self):
        return os.path.join(self.static_dir, INDEX)

    def built(self):
        return os.path.isfile(self.index_path)

    def getChild(self, name, request):
        if name in (b"", INDEX.encode()) and not request.postpath:
            return self
        if name == ASSETS.encode() and request.postpath and self.built():
            return _AssetFile(os.path.join(self.static_dir, ASSETS), "application/octet-stream")
        return _NotFound()

    def render_GET(self, request):
        _common_headers(request)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"content-type", CONTENT_TYPES[".html"].encode())
        try:
            with open(self.index_path, "rb") as f:
                page = f.read()
        except FileNotFoundError:
            if not self._warned_missing:
                self._warned_missing = True
                self.log.warn("dashboard: {path} is missing; '/' explains how to build it "
                              "(cd dashboard && npm ci && npm run build)", path=self.index_path)
            return NOT_BUILT_PAGE.encode("utf-8")
        except OSError as e:
            self.log.error("dashboard: cannot read {path}: {error}", path=self.index_path, error=e)
            return _json_error(request, 500, "the dashboard page cannot be read")
        self._warned_missing = False
        request.setHeader(b"content-security-policy", CSP.encode())
        return page


def dashboard_resource(config, static_dir=None):
    """The dashboard for ``/`` of the HTTP site (a Klein ``branch=True`` route
    may return it, or a plain Resource tree may ``putChild`` its children).

    ``config`` is taken for symmetry with the other parts of the site; nothing in it
    changes how the files are served today.
    """
    return DashboardResource(static_dir or STATIC_DIR)


class DashboardFront(resource.Resource):
    """The root of the HTTP site when the dashboard sits in front of the API.

    Browsers loading the page (``/`` asking for ``text/html``, ``/index.html``)
    and ``/assets/...`` go to the dashboard; every other request, including
    ``/`` from API clients, goes unchanged to ``inner`` (the REST API with its
    CORS and token gate).  The page and its scripts hold no data, so they are
    served without a token: the page itself asks for one when the API answers
    401.
    """

    isLeaf = True

    def __init__(self, inner, dashboard):
        super().__init__()
        self.inner = inner
        self.dashboard = dashboard

    def render(self, request):
        path = request.path
        if path.startswith(b"/assets/") or path == b"/index.html" or (path == b"/" and _wants_html(request)):
            request.prepath = []
            request.postpath = path.split(b"/")[1:]
            return getChildForRequest(self.dashboard, request).render(request)
        return self.inner.render(request)


def _wants_html(request):
    accept = request.getHeader(b"accept") or b""
    return b"text/html" in accept


def dashboard_front(inner, config, static_dir=None):
    """``inner`` (the REST resource) with the dashboard in front: see :class:`DashboardFront`."""
    return DashboardFront(inner, dashboard_resource(config, static_dir))
