"""The notifier: faults over threshold (and later alarm rules) become FCM
pushes and webhook calls, throttled, retried, recorded.

The hub calls :meth:`NotifierService.fault` on the reactor thread for every
FaultDetect with score > threshold.  That call only decides (throttle and
cap, a few dict operations) and starts asynchronous deliveries; it never
waits on the network, so ingest goes on while a receiver hangs.
"""

import datetime
import math
import zoneinfo

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from tsrmon.config.checks import ConfigError
from tsrmon.notify.delivery import Delivery, Notification, http_client
from tsrmon.notify.fcm import FcmChannel
from tsrmon.notify.records import HISTORY_LIMIT
from tsrmon.store.backends import build_attempt_table
from tsrmon.notify.throttle import Throttle
from tsrmon.notify.webhook import parse_webhooks
from tsrmon.rooms import ICounters, IHealth, IReconfigurable

# Said after the body when notifications were held back and the template
# does not place {suppressed} itself ("and N more").
SUPPRESSED_SUFFIX = " (외 {suppressed}건)"


def _json_number(x):
    return x if math.isfinite(x) else repr(x)


@implementer(IHealth, ICounters, IReconfigurable)
class NotifierService(service.Service):
    """FCM and webhook notifications for the hub (``hub.notifier``)."""

    log = Logger()
    name = "notifier"
    health_key = "notifier"  # IHealth: its /healthz check
    counters_key = "notify"  # ICounters: its /metrics prefix

    def __init__(self, config, clock, reactor, fcm_send_url=None, fcm_timeout=10.0, fcm_retries=3,
                 stop_timeout=5.0, max_in_flight=200, http=None, throttle=None):
        self.clock = clock
        self.reactor = reactor
        self.stop_timeout = stop_timeout
        self.max_in_flight = max_in_flight
        # treq's HTTPClient on an Agent (injectable, e.g. with its own pool).
        self.http = http if http is not None else http_client(reactor)
        # Issue 16: a cluster's throttle (notify/throttle.py ClusterThrottle) decides in Redis.
        self.throttle = Throttle(clock, 0, 0) if throttle is None else throttle
        self.records = build_attempt_table(config, reactor)
        self.fcm = None
        self._fcm_args = (fcm_send_url, fcm_timeout, fcm_retries)
        self.targets = []
        self._deliveries = set()
        self._writes = set()
        self._opened = defer.succeed(None)
        self._capping = 0  # notifications held back since the cap began to bite
        self._overload_logged = 0
        self._last = {}  # target label -> {"last_sent", "last_failed", "last_error"}
        self._counters = dict.fromkeys((
            "faults", "requests", "admitted", "throttled", "capped", "no_channel", "not_running",
            "overload_dropped", "fcm_attempts", "fcm_sent", "fcm_failed", "fcm_cancelled",
            "webhook_attempts", "webhook_sent", "webhook_failed", "webhook_cancelled"), 0)
        self._apply(config)

    # -- configuration -------------------------------------------------
    def _apply(self, config):
        """Take the FCM/NOTIFY settings (checked at load: templates and
        topic by FcmSettings, every webhook field by NotifySettings)."""
        fcm = config.fcm
        try:
            webhooks = parse_webhooks(config.notify.webhooks)
        except ValueError as e:
            raise ConfigError(config.source, "NOTIFY.WEBHOOKS", str(e)) from None
        try:
            if self.fcm is None:
                send_url, timeout, retries = self._fcm_args
                self.fcm = FcmChannel(fcm, self.http, self.clock, send_url, timeout, retries)
            else:
                self.fcm.configure(fcm)
        except ValueError as e:
            raise ConfigError(config.source, "FCM.TOPIC", str(e)) from None
        for hook in webhooks:
            hook.http, hook.clock = self.http, self.clock
        self.webhooks = webhooks
        self.title_template = fcm.title
        self.body_template = fcm.body
        self.zone = zoneinfo.ZoneInfo(config.time.zone)
        self.throttle.configure(fcm.timeout, config.notify.max_per_hour)
        self.config = config

    def reconfigure(self, config):
        """SIGHUP: new templates, targets and limits; throttle state is kept."""
        self._apply(config)
        if self.running:
            self._load_targets()

    def _load_targets(self):
        self.targets = self.fcm.load() + list(self.webhooks)
        if not self.targets:
            self.log.warn("no notification channel is enabled: faults over threshold are stored and "
                          "shown live, but nobody is notified (see FCM.CRED_PATH, NOTIFY.WEBHOOKS)")
        elif self.webhooks:
            self.log.info("webhooks: {hooks}", hooks=", ".join(f"{h.name} ({h.format})" for h in self.webhooks))

    # -- service -------------------------------------------------------
    def startService(self):
        super().startService()
        self._load_targets()
        self._opened = self.records.open(self.clock.seconds())

    def stopService(self):
        super().stopService()
        return self._stop()

    @defer.inlineCallbacks
    def _stop(self):
        pending = list(self._deliveries)
        deadline = None
        if pending:
            self.log.info("waiting up to {timeout}s for {n} notification(s) in flight",
                          timeout=self.stop_timeout, n=len(pending))
            for delivery in pending:
                delivery.wind_down()
            deadline = self.clock.callLater(self.stop_timeout, self._cancel_all)
        yield self._opened
        if pending:
            yield defer.DeferredList([d.done for d in pending])
        if deadline is not None and deadline.active():
            deadline.cancel()
        while self._writes:
            yield defer.DeferredList(list(self._writes))
        self.records.close()

    @defer.inlineCallbacks
    def settled(self):
        """Deferred: the deliveries in flight now have ended and been recorded."""
        pending = [d.done for d in list(self._deliveries)]
        if pending:
            yield defer.DeferredList(pending)
        while self._writes:
            yield defer.DeferredList(list(self._writes))

    def deliveries(self):
        """The deliveries in flight (for tests and diagnostics)."""
        return list(self._deliveries)

    def _cancel_all(self):
        for delivery in list(self._deliveries):
            delivery.cancel()

    # -- what the hub and the alarm rules call ---------------------------
    def fault(self, machine, score, threshold, t):
        """NotifySink: a FaultDetect with score > threshold."""
        self._counters["faults"] += 1
        decision = self._admit(machine, "fault")
        if decision is None:
            return
        fields = {"machine": machine, "score": score, "threshold": threshold,
                  "time": self._local_text(t), "kind": "fault", "suppressed": decision.suppressed}
        title = self._render(self.title_template, fields, "FCM.TITLE")
        body = self._render(self.body_template, fields, "FCM.BODY")
        # JSON has no inf/nan: such values travel as text (a receiver's parser
        # must not choke on the alert that matters most).
        data = {"machine": machine, "score": _json_number(score), "threshold": _json_number(threshold),
                "time": self._iso(t), "t": t, "kind": "fault", "suppressed": decision.suppressed}
        self._dispatch(Notification(machine, "fault", title, body, data, t, decision.suppressed),
                       "{suppressed}" not in self.body_template)

    def alarm(self, machine, title, body, data):
        """An alarm rule's raise or clear (``AlarmService``'s ``notify``),
        throttled per (machine, rule)."""
        return self.notify(machine, "alarm:" + data["rule"], title, body, data, t=data["t"])

    def notify(self, machine, kind, title, body, data=None, t=None):
        """Any other alert (alarm rules): throttled per (machine, kind) like faults.

        Returns True when it goes out, False when held back or no channel.
        """
        self._counters["requests"] += 1
        if t is None:
            t = self.clock.seconds()
        decision = self._admit(machine, kind)
        if decision is None:
            return False
        payload = {"machine": machine, "time": self._iso(t), "t": t, "kind": kind,
                   "suppressed": decision.suppressed}
        payload.update(data or {})
        self._dispatch(Notification(machine, kind, title, body, payload, t, decision.suppressed), True)
        return True

    def _admit(self, machine, kind):
        if not self.running:
            self._counters["not_running"] += 1
            return None
        if not self.targets:
            self._counters["no_channel"] += 1
            return None
        decision = self.throttle.admit((machine, kind))
        if not decision.send:
            self._counters[decision.reason] += 1
            if decision.reason == "capped":
                if not self._capping:
                    self.log.warn("NOTIFY.MAX_PER_HOUR ({cap}) reached: notifications are held back "
                                  "(and counted) until the hour's sends age out; first held: {machine}",
                                  cap=self.throttle.max_per_hour, machine=machine)
                self._capping += 1
            # Held back by FCM.TIMEOUT: counted, not logged (this path runs for
            # every fault of a machine in alarm).
            return None
        if self._capping:
            self.log.info("notifications resume; {n} were held back by NOTIFY.MAX_PER_HOUR", n=self._capping)
            self._capping = 0
        self._counters["admitted"] += 1
        return decision

    def _dispatch(self, note, add_suffix):
        confirm = getattr(self.throttle, "confirm", None)
        if confirm is not None:  # issue 16: sent once across the cluster, Redis decides
            confirm((note.machine, note.kind)).addCallback(self._confirmed, note, add_suffix)
            return
        self._deliver(note, add_suffix)

    def _confirmed(self, decision, note, add_suffix):
        if not decision.send:
            self._counters[decision.reason] += 1
            return
        note.suppressed = decision.suppressed
        note.data["suppressed"] = decision.suppressed
        self._deliver(note, add_suffix)

    def _deliver(self, note, add_suffix):
        if note.suppressed and add_suffix:
            note.body += SUPPRESSED_SUFFIX.format(suppressed=note.suppressed)
        self.log.info("notify {machine} ({kind}): {title} | {body} -> {n} target(s)",
                      machine=note.machine, kind=note.kind, title=note.title, body=note.body,
                      n=len(self.targets))
        for target in self.targets:
            if len(self._deliveries) >= self.max_in_flight:
                self._counters["overload_dropped"] += 1
                if self._overload_logged % 100 == 0:
                    self.log.warn("{n} notifications in flight: {target} not notified about {machine} "
                                  "(receivers too slow; dropped so far: {dropped})",
                                  n=len(self._deliveries), target=target.label, machine=note.machine,
                                  dropped=self._counters["overload_dropped"])
                self._overload_logged += 1
                continue
            delivery = Delivery(self.clock, target, note)
            self._deliveries.add(delivery)
            d = delivery.start()
            d.addCallback(self._ended, delivery)
            d.addErrback(lambda f, target=target: self.log.failure(
                "notification delivery to {target} broke", f, target=target.label))

    def _ended(self, outcome, delivery):
        self._deliveries.discard(delivery)
        target, note = delivery.target, delivery.notification
        prefix = target.channel
        self._counters[f"{prefix}_attempts"] += outcome.attempts
        self._counters[f"{prefix}_{outcome.result}"] += 1
        last = self._last.setdefault(f"{target.channel}:{target.label}", {})
        if outcome.result == "sent":
            last["last_sent"] = outcome.t
        else:
            last["last_failed"] = outcome.t
            last["last_error"] = outcome.error
        d = self.records.add({
            "t": outcome.t, "event_id": note.id, "event_t": note.t, "machine": note.machine,
            "kind": note.kind, "channel": target.channel, "target": target.label,
            "result": outcome.result, "attempts": outcome.attempts, "suppressed": note.suppressed,
            "error": outcome.error, "title": note.title, "body": note.body})
        if d is not None:
            self._writes.add(d)
            d.addBoth(lambda _: self._writes.discard(d))

    # -- text ------------------------------------------------------------
    def _render(self, template, fields, key):
        try:
            return template.format(**fields)
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            # Checked at start with sample values; a value-specific failure
            # falls back to plain text rather than losing the alert.
            self.log.warn("{key} could not be applied ({error}); plain text used", key=key, error=e)
            return f"{fields['machine']} {fields['kind']} {fields['score']}/{fields['threshold']}"

    def _local_text(self, t):
        return datetime.datetime.fromtimestamp(t, self.zone).strftime("%Y-%m-%d %H:%M:%S")

    def _iso(self, t):
        return datetime.datetime.fromtimestamp(t, self.zone).isoformat(timespec="milliseconds")

    # -- what REST, /healthz and /metrics read ------------------------------
    def history(self, start_t, end_t, machine=None, limit=HISTORY_LIMIT):
        """Deferred[list of dict]: attempts that ended in [start_t, end_t], oldest first."""
        d = self.records.query(start_t, end_t, machine, limit)

        def shape(rows):
            for row in rows:
                row["time"] = self._iso(row["t"])
            return rows

        d.addCallback(shape)
        return d

    @property
    def enabled(self):
        """True when at least one channel (FCM target, webhook) would be sent to:
        the one answer ``/healthz`` and ``/notifications`` both give."""
        return bool(self.targets)

    def health(self):
        channels = {"fcm": dict(self.fcm.health(), **self._last_for("fcm", [t for t in self.targets
                                                                          if t.channel == "fcm"]))}
        for hook in self.webhooks:
            channels[f"webhook:{hook.name}"] = dict(hook.health(), enabled=True,
                                                    **self._last.get(f"webhook:{hook.label}", {}))
        return {
            "ok": self.records.error is None,
            "enabled": self.enabled,
            "channels": channels,
            "throttle": {"interval": self.throttle.interval, "max_per_hour": self.throttle.max_per_hour,
                         "sent_last_hour": self.throttle.sent_last_hour(), "held": self.throttle.held_total()},
            "in_flight": len(self._deliveries),
            "history": {"path": self.records.path, "error": self.records.error},
        }

    def _last_for(self, channel, targets):
        """The newest success/failure over a channel's targets."""
        out = {}
        for target in targets:
            for k, v in self._last.get(f"{channel}:{target.label}", {}).items():
                if k == "last_error":
                    continue
                if v is not None and (out.get(k) is None or v > out[k]):
                    out[k] = v
                    if k == "last_failed":
                        out["last_error"] = self._last[f"{channel}:{target.label}"].get("last_error")
        return out

    def counters(self):
        """Flat numbers for /metrics (names without a prefix; the web room adds one)."""
        out = dict(self._counters)
        out["in_flight"] = len(self._deliveries)
        out["held"] = self.throttle.held_total()
        out["sent_last_hour"] = self.throttle.sent_last_hour()
        out["records_written"] = self.records.written
        out["records_failed"] = self.records.failed
        tokens = self.fcm.tokens
        out["fcm_token_refreshes"] = tokens.refreshes if tokens else 0
        out["fcm_token_failures"] = tokens.failures if tokens else 0
        out["fcm_enabled"] = int(self.fcm.enabled)
        out["webhooks"] = len(self.webhooks)
        return out
