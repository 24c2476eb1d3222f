"""The REST API: the deployed app's eight endpoints (fixed) and the additions.

:class:`RestAPI` holds its dependencies and inherits its Klein routes, one
class per resource in :mod:`tsrmon.web.routes` (statistics, faults,
machines, spectra, notifications, alarms, health); here are the site's own
routes (``/``, ``/openapi.json``, the ``/socket.io/`` mount) and the error
answers of every route.  :meth:`RestAPI.resource` is the root resource of
the one HTTP site on SERVER.PORT (REST, ``/socket.io/``), wrapped by
:class:`tsrmon.web.gate.Gate` for CORS and API tokens.  See ``docs/api.md``
for every route.
"""

from twisted.logger import Logger
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from tsrmon.peerlog import PeerLog, peer_text
from tsrmon.web import openapi
from tsrmon.web.gate import Gate, allowed_methods, error_body
from tsrmon.web.metrics import RestMetrics
from tsrmon.web.policy import HttpPolicy
from tsrmon.web.routes import app as _app
from tsrmon.web.routes.alarms import AlarmRoutes
from tsrmon.web.routes.answers import JSON, client_address
from tsrmon.web.routes.faults import FaultRoutes
from tsrmon.web.routes.health import HealthRoutes
from tsrmon.web.routes.machines import MachineRoutes
from tsrmon.web.routes.notifications import NotificationRoutes
from tsrmon.web.routes.params import BadParameter
from tsrmon.web.routes.spectra import SpectraRoutes
from tsrmon.web.routes.stats import StatRoutes


def _route_label(path):
    """A bounded label for request metrics."""
    if path.startswith(b"/socket.io"):
        return "/socket.io/"
    p = path.decode("utf-8", "replace")
    if p in openapi.STATIC_PATHS:
        return p
    if p.startswith("/stat/"):
        return "/stat/{level}"
    return "other"


class RestAPI(StatRoutes, FaultRoutes, MachineRoutes, SpectraRoutes, NotificationRoutes, AlarmRoutes,
              HealthRoutes):
    """The HTTP routes.  Construct once; :meth:`resource` for the Site."""

    app = _app
    log = Logger()

    def __init__(self, config, clock, hub, reader, live=None, notifier=None, health=None,
                 counters=None, alarms=None, policy=None, catalog=None, cluster=None):
        self.config = config
        self.cluster = cluster  # issue 16: tsrmon.cluster.room.ClusterRoom, or None
        self.catalog = catalog  # tsrmon.spectra.catalog.SensorCatalog (sensor metadata), or None
        # CORS and tokens: the daemon's one HttpPolicy (shared with the live
        # layer and reloaded by SIGHUP as a room of its own), or our own.
        if policy is None and live is not None:
            policy = getattr(live, "policy", None)  # the live layer's: one policy for the whole site
            self._own_policy = False
        else:
            self._own_policy = policy is None
        self.policy = HttpPolicy.from_config(config) if policy is None else policy
        self.alarms = alarms
        self.clock = clock
        self.hub = hub
        self.reader = reader
        self.live = live
        self.notifier = notifier
        self.health = {} if health is None else health  # name -> check (tsrmon.rooms.health_checks)
        self.metrics = RestMetrics(hub, counters)
        self._rates = {}  # machine -> (t, frames, frames_per_second)
        self._gates = []
        # Bad input: a few lines per client and reason a minute.  A real
        # internal error: its traceback once per route and exception type a
        # minute (a flood of failing requests cannot flood the log).
        self.peerlog = PeerLog(self.log, clock)
        self.failures = PeerLog(self.log, clock, burst=1, global_burst=20)

    def reconfigure(self, config):
        """SIGHUP: aliases, CORS origins and tokens take effect for new requests
        (a shared policy is reloaded by its owner, not here)."""
        self.config = config
        if self._own_policy:
            self.policy.reconfigure(config)

    def resource(self):
        """The root resource of the HTTP site (REST and ``/socket.io/``)."""
        gate = Gate(self.app.resource(), self.policy, self.clock, self._observe,
                    live=self.live is not None)
        self._gates.append(gate)
        return gate

    def _observe(self, request, seconds):
        self.metrics.observe(_route_label(request.path), request.code, seconds)

    # -- errors (of every route) ----------------------------------------------------------
    @app.handle_errors(BadParameter)
    def _bad_parameter(self, request, failure):
        e = failure.value
        self.peerlog.info(client_address(request), f"bad {e.parameter}",
                          "{method} {path} from {client}: 400 {error}",
                          method=peer_text(request.method, 8), path=peer_text(request.path),
                          client=client_address(request), error=peer_text(e.message, 160))
        request.setResponseCode(400)
        request.setHeader(b"Content-Type", JSON)
        return error_body(e.message, e.parameter)

    @app.handle_errors(NotFound)
    def _not_found(self, request, failure):
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", JSON)
        return error_body(f"no such route: {request.path.decode('utf-8', 'replace')}", None)

    @app.handle_errors(MethodNotAllowed)
    def _not_allowed(self, request, failure):
        request.setResponseCode(405)
        request.setHeader(b"Content-Type", JSON)
        request.setHeader(b"Allow", allowed_methods(request.path))
        return error_body(f"method {request.method.decode('ascii', 'replace')} not allowed", None)

    @app.handle_errors
    def _internal(self, request, failure):
        if failure.check(HTTPException):  # e.g. a redirect to add a trailing slash
            he = failure.value
            request.setResponseCode(he.code)
            for header, value in he.get_response({}).headers:
                if header.lower() == "location":
                    request.setHeader(b"Location", value.encode("utf-8"))
            request.setHeader(b"Content-Type", JSON)
            return error_body(he.description or he.name, None)
        self.failures.error(_route_label(request.path), type(failure.value).__name__,
                            "{method} {uri} from {client} failed (more such failures of this "
                            "route are counted, not logged, for a minute)",
                            log_failure=failure, method=peer_text(request.method, 8),
                            uri=peer_text(request.uri, 200), client=client_address(request))
        request.setResponseCode(500)
        request.setHeader(b"Content-Type", JSON)
        return error_body("internal error (logged)", None)

    # -- index, live mount -----------------------------------------------
    @app.route("/", methods=["GET"])
    def index(self, request):
        return self._json(request, {
            "name": "tsrmon",
            "openapi": "/openapi.json",
            "routes": sorted(openapi.STATIC_PATHS | {"/stat/{level}"}),
        })

    @app.route("/socket.io/", branch=True)
    def socketio(self, request):
        if self.live is None:
            raise NotFound()
        return self.live.resource()

    @app.route("/openapi.json", methods=["GET"])
    def openapi_json(self, request):
        return self._json(request, openapi.spec(self.config))
