"""``/notifications``: the notifier's attempt records of a date range."""

from datetime import timedelta

from twisted.internet import defer

from tsrmon.web.routes import app
from tsrmon.web.routes.answers import Answers
from tsrmon.web.routes.params import Params


class NotificationRoutes(Answers, Params):
    @app.route("/notifications", methods=["GET"])
    @defer.inlineCallbacks
    def notifications(self, request):
        start, end = self._recent_range(request)
        if self.notifier is None:
            return self._json(request, {"enabled": False, "notifications": []})
        items = yield self.notifier.history(self._epoch(start), self._epoch(end + timedelta(days=1)))
        # The same answer as the notifier's /healthz check: a notifier with no
        # channel configured is not enabled (its history may still hold rows).
        enabled = bool(getattr(self.notifier, "enabled", True))
        return self._json(request, {"enabled": enabled, "notifications": list(items or [])})
