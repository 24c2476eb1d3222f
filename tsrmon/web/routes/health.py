"""The operations routes: ``/healthz`` (every ``IHealth`` room's check) and
``/metrics`` (Prometheus text)."""

from tsrmon.web.metrics import CONTENT_TYPE as METRICS_TYPE
from tsrmon.web.routes import app
from tsrmon.web.routes.answers import Answers


class HealthRoutes(Answers):
    @app.route("/healthz", methods=["GET"])
    def healthz(self, request):
        checks = {}
        ok = True
        for name, check in sorted(self.health.items()):
            try:
                result = check()
                if not isinstance(result, dict):
                    result = {"ok": bool(result)}
            except Exception as e:
                self.log.failure("health check {name} raised", name=name)
                result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            result = dict(result)
            result["ok"] = bool(result.get("ok"))
            ok = ok and result["ok"]
            checks[name] = result
        return self._json(request, {"ok": ok, "time": float(self.clock.seconds()), "checks": checks},
                          200 if ok else 503)

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request):
        request.setHeader(b"Content-Type", METRICS_TYPE)
        return self.metrics.render()
