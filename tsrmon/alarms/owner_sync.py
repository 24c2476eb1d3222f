"""Alarm state across a cluster's failover (issue 16).

On several nodes sharing one PostgreSQL store, a machine's alarms are
judged by the node that feeds it now, and that node changes: its DAQ
reconnects through the balancer to another node after a failover or a
restart.  The alarm table is shared, so each time this node begins feeding
a machine (a new claim: ``Machine.connects`` changed) the machine's state
is read again before its rules are judged:

- an alarm active in the store (raised by the node that fed it before) is
  adopted: its tracker is active with the same id, so it is neither lost
  nor raised (nor pushed) again, and it clears here as usual;
- an alarm this node still holds in memory whose row says ``cleared``
  (another node cleared it meanwhile) is dropped here without a word;
- an alarm this node holds whose row is not in the store yet (its insert
  is still on its way) is kept.

Until the read returns (a few ms) the machine's seconds and machine rules
are not judged (``seconds_syncing``).  On one node, or with SQLite (a
node's own file), nothing of this runs.
"""

from tsrmon.alarms.engine import ACTIVE, INACTIVE


class OwnerSync:
    """Mixin of :class:`~tsrmon.alarms.service.AlarmService`: uses its ``hub``
    (the machine registry), ``store``, ``active_alarms``, ``_tracker``,
    ``_adopt`` and ``_counters``."""

    def _init_owner_sync(self, config):
        self._sync_on = config.cluster.enabled and config.database.backend == "postgresql"
        self._synced = {}  # machine -> claim (Machine.connects) whose stored state is loaded
        self._syncing = {}  # machine -> claim being loaded

    def _owned(self, machine):
        """True when ``machine``'s state is current for this node's claim;
        otherwise starts (or waits for) the read and returns False."""
        if not self._sync_on:
            return True
        m = self.hub.get(machine)
        claim = None if m is None else m.connects
        if self._synced.get(machine) == claim:
            return True
        if self._syncing.get(machine) != claim:
            self._syncing[machine] = claim
            ids = [a.id for a in self.active_alarms.values() if a.machine == machine]
            d = self.store.machine_state(machine, ids)
            d.addCallbacks(self._synced_state, self._sync_failed, callbackArgs=(machine, claim, ids),
                           errbackArgs=(machine, claim))
        self._counters["seconds_syncing"] += 1
        return False

    def _synced_state(self, rows, machine, claim, held_ids):
        if self._syncing.get(machine) != claim:
            return  # a newer claim's read is on its way
        stored = {a.id: a for a in rows}
        cleared = []
        for alarm_id in held_ids:
            row = stored.get(alarm_id)
            alarm = self.active_alarms.get(alarm_id)
            if alarm is None or row is None or row.state == "active":
                continue  # gone meanwhile, or its insert is not stored yet: kept
            tracker = self.trackers.get((alarm.rule, alarm.machine, alarm.sensor or ""))
            if tracker is not None and tracker.alarm is alarm:
                tracker.alarm = None
                tracker.state = INACTIVE
                tracker.since = tracker.clear_since = None
            self.active_alarms.pop(alarm_id, None)
            self._counters["alarms_dropped_stale"] += 1
        for alarm in rows:
            if alarm.state != "active" or alarm.id in self.active_alarms:
                continue
            tracker = self.trackers.get((alarm.rule, alarm.machine, alarm.sensor or ""))
            if tracker is not None and tracker.state == ACTIVE and tracker.alarm is not None:
                continue  # this node raised its own meanwhile: one is enough
            clear = self._adopt(alarm)
            if clear is not None:
                cleared.append(clear)
            self._counters["alarms_adopted"] += 1
            self.log.info("alarm adopted from the shared store: {rule} on {machine} {sensor} (raised by the "
                          "node that fed it before)", rule=alarm.rule, machine=machine, sensor=alarm.sensor)
        for tracker in cleared:
            self._clear(tracker, tracker.alarm.value, "rule removed or changed its scope")
        del self._syncing[machine]
        self._synced[machine] = claim

    def _sync_failed(self, failure, machine, claim):
        if self._syncing.get(machine) != claim:
            return
        # The store is away: judge with what this node knows rather than not at all.
        self.log.warn("alarms: the stored state of {machine} could not be read ({error}); judged with this "
                      "node's own", machine=machine, error=failure.getErrorMessage())
        del self._syncing[machine]
        self._synced[machine] = claim
