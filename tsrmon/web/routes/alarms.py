"""The alarm rules' routes (tsrmon.alarms): ``/alarms`` (active),
``/alarms/history`` and ``POST /alarms/<id>/ack``."""

from datetime import timedelta

from twisted.internet import defer

from tsrmon.web.routes import app
from tsrmon.web.routes.answers import Answers, client_address
from tsrmon.web.routes.params import BadParameter, Params

MAX_BY = 200  # who acknowledges an alarm (openapi: maxLength 200)


class AlarmRoutes(Answers, Params):
    @app.route("/alarms", methods=["GET"])
    def alarms_active(self, request):
        machine = self._opt_machine(request)
        items = self.alarms.active(machine=machine) if self.alarms is not None else []
        return self._json(request, {"enabled": self.alarms is not None, "alarms": list(items)})

    @app.route("/alarms/history", methods=["GET"])
    @defer.inlineCallbacks
    def alarms_history(self, request):
        machine = self._opt_machine(request)
        start, end = self._recent_range(request)
        if self.alarms is None:
            return self._json(request, {"enabled": False, "alarms": []})
        try:
            items = yield self.alarms.history(self._epoch(start), self._epoch(end + timedelta(days=1)),
                                              machine=machine)
        except RuntimeError as e:
            return self._error(request, 503, str(e), None)
        return self._json(request, {"enabled": True, "alarms": list(items or [])})

    @app.route("/alarms/<string:alarm_id>/ack", methods=["POST"])
    @defer.inlineCallbacks
    def alarms_ack(self, request, alarm_id):
        by = self._arg(request, "by")
        if by is not None and len(by) > MAX_BY:
            raise BadParameter("by", f"by is longer than {MAX_BY} characters")
        if by is None:
            # A proxy's user header (kept short), else the client address (a
            # UNIX-socket endpoint has no host).
            by = (request.getHeader("X-Forwarded-User") or "")[:MAX_BY] or client_address(request)
        if self.alarms is None:
            return self._error(request, 404, "alarm rules are not running", None)
        try:
            item = yield self.alarms.ack(alarm_id, by=by)
        except KeyError:
            return self._error(request, 404, f"no active alarm {alarm_id!r}", "alarm_id")
        return self._json(request, item)
