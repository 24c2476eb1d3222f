"""The fault routes: ``/stat/anomaly``, ``/stat/anomaly/all`` (stored
anomalies, as the deployed server served them) and ``/stat/faults``
(every FaultDetect, with ``over``)."""

from twisted.internet import defer

from tsrmon.web.routes import app
from tsrmon.web.routes.answers import Answers
from tsrmon.web.routes.params import Params


class FaultRoutes(Answers, Params):
    @app.route("/stat/anomaly", methods=["GET"])
    @defer.inlineCallbacks
    def stat_anomaly(self, request):
        machine = self._machine(request)
        start, end = self._range(request)
        fmt = self._format(request)
        rows = yield self.reader.anomalies(machine, start, end)
        return self._anomaly_answer(request, rows, fmt, f"{machine}_anomaly_{start}_{end}")

    @app.route("/stat/anomaly/all", methods=["GET"])
    @defer.inlineCallbacks
    def stat_anomaly_all(self, request):
        start, end = self._range(request)
        fmt = self._format(request)
        rows = yield self.reader.all_anomalies(start, end)
        return self._anomaly_answer(request, rows, fmt, f"anomaly_{start}_{end}")

    def _anomaly_answer(self, request, rows, fmt, stem):
        # The deployed server swapped these two; here score is the score.
        if fmt == "csv":
            return self._csv(request, stem, ["name", "time", "score", "threshold"],
                             [list(r) for r in rows])
        return self._json(request, [{"name": m, "time": t, "score": s, "threshold": th}
                                    for m, t, s, th in rows])

    @app.route("/stat/faults", methods=["GET"])
    @defer.inlineCallbacks
    def stat_faults(self, request):
        machine = self._machine(request)
        start, end = self._range(request)
        fmt = self._format(request)
        rows = yield self.reader.faults(machine, start, end)
        if fmt == "csv":
            return self._csv(request, f"{machine}_faults_{start}_{end}",
                             ["name", "time", "t", "score", "threshold", "over"],
                             [[machine, t, ep, s, th, int(s > th)] for t, ep, s, th in rows])
        out = []
        for t, ep, s, th in rows:
            item = {"name": machine, "time": t, "score": s, "threshold": th, "over": s > th}
            if ep is not None:
                item["t"] = ep
            out.append(item)
        return self._json(request, out)
